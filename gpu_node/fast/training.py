"""Training a Johnson et al. network for one style picture.

The loop: random square crops from a photo folder, the transformer's output scored by
`PerceptualLoss`, Adam. On CUDA the forward passes run under fp16 autocast with a
gradient scaler (Gram matrices stay float32). Every `checkpoint_interval` iterations the
full state (network, optimiser, scaler, iteration) is saved next to the output, so
`resume` continues where a run stopped. The result is a half-precision safetensors file
(`modelfile`) with a thumbnail rendered from the gallery's photo.
"""

import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from gpu_node.engine.progress import EngineProgress, ProgressFn, check_cancel
from gpu_node.engine.vgg import LAYER_INDEX, VGG19Features
from gpu_node.engine.weights import load_weights
from gpu_node.errors import BadInputError
from gpu_node.fast.dataset import PhotoDataset
from gpu_node.fast.johnson import JohnsonNet
from gpu_node.fast.losses import STYLE_LAYERS, LossWeights, PerceptualLoss
from gpu_node.fast.make_thumbnails import render_thumbnail
from gpu_node.fast.modelfile import ModelInfo, save_model
from gpu_node.fast.trainconfig import TrainConfig
from gpu_node.images import open_image, resize_long_side
from gpu_node.tensors import image_to_tensor

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    model: Path
    iterations: int
    first_loss: float
    last_loss: float
    seconds: float


def _batches(loader: DataLoader[torch.Tensor]) -> Iterator[torch.Tensor]:
    while True:
        yield from loader


def _save_checkpoint(
    config: TrainConfig,
    net: JohnsonNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    iteration: int,
) -> None:
    state = {
        "iteration": iteration,
        "net": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "style": str(config.style),
    }
    tmp = config.checkpoint_path.with_name(config.checkpoint_path.name + ".tmp")
    config.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp)
    os.replace(tmp, config.checkpoint_path)  # a crash mid-write keeps the old checkpoint
    log.info("checkpoint at iteration %d: %s", iteration, config.checkpoint_path)


def _load_checkpoint(
    path: Path,
    net: JohnsonNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> int:
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        iteration = int(state["iteration"])
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError, struct.error) as exc:
        raise BadInputError(
            f"cannot resume from {path}: not a training checkpoint ({exc})"
        ) from None
    log.info("resuming from iteration %d (%s)", iteration, path)
    return iteration


def train(
    config: TrainConfig,
    device: torch.device,
    *,
    resume: Path | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    show_bar: bool = True,
) -> TrainResult:
    """Train, checkpoint, and write the model file; returns where it went and the losses."""
    config.validate()
    torch.manual_seed(config.seed)
    style_image = image_to_tensor(resize_long_side(open_image(config.style), config.style_size))
    dataset = PhotoDataset(config.dataset, config.image_size, seed=config.seed)
    cuda = device.type == "cuda"
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= config.batch_size,
        num_workers=4 if cuda else 0,
        pin_memory=cuda,
        persistent_workers=cuda,
    )
    deepest = max([*STYLE_LAYERS, config.content_layer], key=LAYER_INDEX.__getitem__)
    vgg = VGG19Features(load_weights(), up_to=deepest).to(device)
    loss_fn = PerceptualLoss(
        vgg,
        style_image.to(device),
        LossWeights(config.content_weight, config.style_weight, config.tv_weight),
        content_layer=config.content_layer,
    )
    net = JohnsonNet().to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    start = _load_checkpoint(resume, net, optimizer, scaler, device) if resume else 0

    began = time.perf_counter()
    first_loss = last_loss = float("nan")
    bar = tqdm(
        total=config.iterations, initial=start, disable=not show_bar, unit="it", dynamic_ncols=True
    )
    batches = _batches(loader)
    for iteration in range(start + 1, config.iterations + 1):
        check_cancel(cancel)
        content = next(batches).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            terms = loss_fn(net(content), content)
        optimizer.zero_grad(set_to_none=True)
        scaled: torch.Tensor = scaler.scale(terms["total"])
        scaled.backward()  # type: ignore[no-untyped-call]
        scaler.step(optimizer)
        scaler.update()
        last_loss = float(terms["total"].detach())
        if iteration == start + 1:
            first_loss = last_loss
        values = {k: float(v.detach()) for k, v in terms.items()}
        bar.update(1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
        if progress is not None:
            progress(
                EngineProgress(iteration, config.iterations, values, time.perf_counter() - began)
            )
        if iteration % config.checkpoint_interval == 0 or iteration == config.iterations:
            _save_checkpoint(config, net, optimizer, scaler, iteration)
    bar.close()

    net.eval()
    thumbnail = render_thumbnail(net.stylize, device)
    name = config.name or config.style.stem.replace("_", " ").title()
    info = ModelInfo(
        name=name, source=config.style.name, thumbnail=thumbnail, params=config.params()
    )
    save_model(config.out, net, info)
    log.info("wrote %s", config.out)
    return TrainResult(
        config.out, config.iterations, first_loss, last_loss, time.perf_counter() - began
    )
