"""Running fast-style requests: built-in blends, trained styles and arbitrary style images.

`FastEngine` owns the loaded networks of one device and turns a request into a picture.
Networks load on first use and stay loaded; trained models are cached by id. Like the
Gatys engine it takes tensors and a cancel flag and knows nothing of the wire.

Several requests of one network and picture size run as one batch (`stylize_batch`,
`stylize_arbitrary_batch`); `batch_key` says which may share one.
"""

import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from gpu_node.engine.capacity import free_bytes
from gpu_node.engine.progress import check_cancel
from gpu_node.errors import BadInputError, CapacityError
from gpu_node.fast.arbitrary import ArbitraryTransformer, StylePredictor, load_arbitrary_transformer
from gpu_node.fast.johnson import JohnsonNet
from gpu_node.fast.modelfile import load_model
from gpu_node.fast.multistyle import NUM_STYLES, MultiStyleNet, load_multistyle
from gpu_node.fast.post import keep_colors, mix
from gpu_node.fast.registry import StyleKind, StyleRegistry
from gpu_node.fast.spec import StyleMix, check_strength
from gpu_node.images import MIN_SIDE
from gpu_node.tensors import tensor_to_image

# Peak bytes per pixel of a full-resolution pass: a few 32-channel float32 maps (the conv
# output, its reflection-padded copy, the next conv's output) alive at once.
BYTES_PER_PIXEL = 4 * 32 * 4


def check_fits(photo: torch.Tensor, device: torch.device) -> None:
    """BadInputError for a picture too small for the networks, CapacityError for too large."""
    if min(photo.shape[-2:]) < MIN_SIDE:
        raise BadInputError(
            f"{photo.shape[-1]}x{photo.shape[-2]} is too small; each side needs {MIN_SIDE} px"
        )
    pixels = photo.shape[-1] * photo.shape[-2]
    need, free = pixels * BYTES_PER_PIXEL, free_bytes(device)
    if need > free:
        raise CapacityError(
            f"{photo.shape[-1]}x{photo.shape[-2]} needs about {need / 2**30:.1f} GiB and "
            f"{device} has {free / 2**30:.1f} GiB free; use a smaller size"
        )


@dataclass(frozen=True)
class FastItem:
    """One built-in or trained style request: a photo [1, 3, H, W] and what to do to it."""

    photo: torch.Tensor
    request: StyleMix
    strength: float = 1.0
    preserve_colors: bool = False


@dataclass(frozen=True)
class ArbitraryItem:
    """One arbitrary style request: a photo [1, 3, H, W] and its style vector [1, 100]."""

    photo: torch.Tensor
    vector: torch.Tensor
    preserve_colors: bool = False


class FastEngine:
    """Loaded fast-style networks on one device."""

    def __init__(self, registry: StyleRegistry, device: torch.device) -> None:
        self.registry = registry
        self.device = device
        self._multistyle: MultiStyleNet | None = None
        self._trained: dict[str, JohnsonNet] = {}
        self._arbitrary: ArbitraryTransformer | None = None
        self._predictor: StylePredictor | None = None

    @property
    def multistyle(self) -> MultiStyleNet:
        """The 26-style network, loaded on first use."""
        if self._multistyle is None:
            self._multistyle = load_multistyle().to(self.device)
        return self._multistyle

    def style_weights(self, request: StyleMix) -> torch.Tensor:
        """The 26 weights of a blend of built-in styles; BadInputError for anything else."""
        weights = torch.zeros(NUM_STYLES)
        for style_id, weight in request.parts:
            entry = self.registry.get(style_id)
            if entry.kind is not StyleKind.BUILTIN or entry.index is None:
                raise BadInputError(
                    f"{entry.id} is a trained style; only built-in styles can be blended"
                )
            weights[entry.index] += weight
        return weights

    def _trained_net(self, style_id: str) -> JohnsonNet:
        entry = self.registry.get(style_id)
        assert entry.path is not None
        if entry.id not in self._trained:
            self._trained[entry.id] = load_model(entry.path, self.device)
        return self._trained[entry.id]

    def stylize(
        self,
        photo: torch.Tensor,
        request: StyleMix,
        *,
        strength: float = 1.0,
        preserve_colors: bool = False,
        cancel: threading.Event | None = None,
    ) -> torch.Tensor:
        """Stylise `photo` [1, 3, H, W] in 0..1 with built-in blends or one trained style."""
        item = FastItem(photo, request, strength, preserve_colors)
        check_cancel(cancel)
        self.check(item)
        return self.stylize_batch([item])[0]

    def check(self, item: FastItem) -> None:
        """BadInputError or CapacityError if `item` cannot run (before it joins a batch)."""
        check_strength(item.strength)
        check_fits(item.photo, self.device)
        first = self.registry.get(item.request.ids[0])
        if first.kind is StyleKind.TRAINED and len(item.request.parts) > 1:
            raise BadInputError(f"{first.id} is a trained style; it cannot be blended")
        if first.kind is StyleKind.BUILTIN:
            self.style_weights(item.request)

    def batch_key(self, item: FastItem) -> Hashable:
        """Items with equal keys run through the same network at the same size."""
        first = self.registry.get(item.request.ids[0])
        network = first.id if first.kind is StyleKind.TRAINED else "builtin"
        return ("fast", network, tuple(item.photo.shape))

    def stylize_batch(self, items: Sequence[FastItem]) -> list[torch.Tensor]:
        """Run checked items of one `batch_key` in one pass; one picture [1, 3, H, W] each."""
        photos = torch.cat([item.photo for item in items]).to(self.device)
        first = self.registry.get(items[0].request.ids[0])
        with torch.inference_mode():
            if first.kind is StyleKind.TRAINED:
                outs = self._trained_net(first.id).stylize(photos)
            else:
                weights = torch.stack([self.style_weights(i.request) for i in items])
                outs = self.multistyle.stylize(photos, weights.to(self.device))
            results = []
            for k, item in enumerate(items):
                out, photo = outs[k : k + 1], photos[k : k + 1]
                if item.preserve_colors:
                    out = keep_colors(out, photo)
                results.append(mix(out, photo, check_strength(item.strength)))
            return results

    def _arbitrary_nets(self) -> tuple[ArbitraryTransformer, StylePredictor]:
        if self._arbitrary is None or self._predictor is None:
            self._arbitrary = load_arbitrary_transformer().to(self.device)
            self._predictor = StylePredictor(_onnx_providers(self.device))
        return self._arbitrary, self._predictor

    def style_vector(
        self, photo: torch.Tensor, style_image: Image.Image, strength: float
    ) -> torch.Tensor:
        """The style image's vector, moved toward the photo's own as strength falls to 0."""
        _, predictor = self._arbitrary_nets()
        vector = predictor.predict(style_image)
        if strength < 1.0:
            own = predictor.predict(tensor_to_image(photo))
            vector = torch.lerp(own, vector, strength)
        return vector

    def stylize_arbitrary(
        self,
        photo: torch.Tensor,
        style_image: Image.Image,
        *,
        strength: float = 1.0,
        preserve_colors: bool = False,
        cancel: threading.Event | None = None,
    ) -> torch.Tensor:
        """Stylise `photo` [1, 3, H, W] after any picture, at the photo's full resolution."""
        item = self.arbitrary_item(photo, style_image, strength, preserve_colors, cancel)
        return self.stylize_arbitrary_batch([item])[0]

    def arbitrary_item(
        self,
        photo: torch.Tensor,
        style_image: Image.Image,
        strength: float = 1.0,
        preserve_colors: bool = False,
        cancel: threading.Event | None = None,
    ) -> ArbitraryItem:
        """Check the request and predict its style vector: the per-job part of the work."""
        strength = check_strength(strength)
        check_cancel(cancel)
        check_fits(photo, self.device)
        vector = self.style_vector(photo, style_image, strength)
        check_cancel(cancel)
        return ArbitraryItem(photo, vector, preserve_colors)

    def stylize_arbitrary_batch(self, items: Sequence[ArbitraryItem]) -> list[torch.Tensor]:
        """Run items of one picture size through the transformer in one pass."""
        transformer, _ = self._arbitrary_nets()
        photos = torch.cat([item.photo for item in items]).to(self.device)
        vectors = torch.cat([item.vector for item in items]).to(self.device)
        with torch.inference_mode():
            outs = transformer.stylize(photos, vectors)
            return [
                keep_colors(outs[k : k + 1], photos[k : k + 1])
                if item.preserve_colors
                else outs[k : k + 1]
                for k, item in enumerate(items)
            ]


def _onnx_providers(device: torch.device) -> tuple[str, ...]:
    if device.type == "cuda":
        return ("CUDAExecutionProvider", "CPUExecutionProvider")
    return ("CPUExecutionProvider",)
