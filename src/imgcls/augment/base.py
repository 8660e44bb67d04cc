"""What every augmentation shares: the per-batch context, the registry, and `p`.

An op is a validated pydantic model (its fields are its config keys, so `imgcls augment
list` and config errors come from one place) that is called on a whole NCHW batch. The
base class draws one coin per image and runs the op on the chosen images only, so `p=0` is
the identity and the op itself never has to think about probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from imgcls.augment.functional import to_device
from imgcls.registry import Registry


@dataclass
class AugmentContext:
    ids: torch.Tensor  # dataset index of every image in the batch, on the CPU (per-image state)
    dataset_size: int
    epoch: int
    generator: torch.Generator  # CPU generator seeded from (seed, epoch): all randomness
    seed: int

    def subset(self, index: torch.Tensor) -> AugmentContext:
        return replace(self, ids=self.ids[index])


class AugmentOp(BaseModel):
    """p: the probability that an image gets this op (the notes' `_prob` variants)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    p: float = Field(1.0, ge=0.0, le=1.0)
    op_name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __call__(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        n = len(x)
        chosen = torch.rand(n, generator=ctx.generator) < self.p
        if self.p >= 1.0 or bool(chosen.all()):
            return self.apply(x, ctx)
        index = chosen.nonzero().squeeze(1)
        if len(index) == 0:
            return x
        out = x.clone()
        device_index = to_device(index, x.device)
        out[device_index] = self.apply(x[device_index], ctx.subset(index))
        return out

    def apply(self, x: torch.Tensor, ctx: AugmentContext) -> torch.Tensor:
        """The op on every image of `x`, each with its own random parameters."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """The op as a fully resolved config entry (every default written out)."""
        return {"name": self.op_name, **self.model_dump(mode="json")}


AUGMENTS: Registry[type[AugmentOp]] = Registry("augmentation")


def register(name: str, summary: str):
    """Register an op class under the name configs use, with a one-line summary."""

    def add(cls: type[AugmentOp]) -> type[AugmentOp]:
        cls.op_name, cls.summary = name, summary
        return AUGMENTS.register(name)(cls)

    return add
