"""Why a network decided: Grad-CAM (Selvaraju et al., 2017) for any of the zoo's networks
and any timm model. The map is taken at the last feature map that still has a spatial extent
(found by a forward pass, not by a per-architecture layer name), weighted by the gradient of
the class's logit averaged over that map: where the evidence for the class lies."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def last_spatial_module(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The module whose output is the last map of shape (N, C, H, W), H and W >= 2, in the
    order a forward pass computes them."""
    found: list[nn.Module] = []

    def record(module: nn.Module, _: object, out: object) -> None:
        if isinstance(out, torch.Tensor) and out.ndim == 4 and min(out.shape[-2:]) >= 2:
            found.append(module)

    hooks = [m.register_forward_hook(record) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    if not found:
        raise ValueError(f"{type(model).__name__}: no spatial feature map to explain")
    return found[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps (N, H, W) in [0, 1] at the input's size, the explained class per image: the
    predicted one unless `target` gives it). The model is used in eval mode."""
    model.eval()
    layer = last_spatial_module(model, x)
    kept: dict[str, torch.Tensor] = {}

    def keep(_: nn.Module, __: object, out: torch.Tensor) -> torch.Tensor:
        kept["map"] = out
        return out.clone()  # later in-place ops (ReLU(inplace)) change the clone, not the map

    hook = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x)
            classes = logits.argmax(1) if target is None else target
            score = logits.gather(1, classes[:, None]).sum()
            grads = torch.autograd.grad(score, kept["map"])[0]
    finally:
        hook.remove()
    feature_map = kept["map"].detach().float()
    weights = grads.float().mean((2, 3), keepdim=True)
    cam = F.relu((weights * feature_map).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12)
    return cam / peak[:, None, None], classes.detach()


def overlay(image: np.ndarray, cam: np.ndarray,
            colormap: Callable[[np.ndarray], np.ndarray] | None = None,
            alpha: float = 0.45) -> np.ndarray:
    """uint8 HWC: the image (RGB or gray) with the map laid over it in colour (jet: red is
    where the evidence lies), the map resized to the image."""
    import matplotlib

    colormap = colormap or matplotlib.colormaps["jet"]
    h, w = image.shape[:2]
    if cam.shape != (h, w):
        cam = F.interpolate(torch.from_numpy(cam)[None, None].float(), size=(h, w),
                            mode="bilinear", align_corners=False)[0, 0].numpy()
    heat = colormap(np.clip(cam, 0, 1))[..., :3] * 255
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    return ((1 - alpha) * rgb + alpha * heat).round().clip(0, 255).astype(np.uint8)
