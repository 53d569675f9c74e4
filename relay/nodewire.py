"""What crosses between the wire protocol and the relay's own vocabulary: a node's Hello
becomes the scheduler's `NodeInfo`, and the job service's `OfferJob` a protocol `Offer`."""

from protocol import Hello, Offer, Scalar, StyleImage
from relay.dispatch import NodeInfo
from relay.handles import OfferJob


def node_info(name: str, hello: Hello) -> NodeInfo:
    """What the scheduler needs of a node, from its Hello; the name is the token's name."""
    caps = hello.capabilities
    styles = {s.id: s for s in caps.styles if s.method == "fast"}
    return NodeInfo(
        name=name,
        device_name=caps.device_name,
        device_memory=caps.device_memory,
        methods=frozenset(caps.methods),
        styles=frozenset(styles),
        max_epochs=caps.max_epochs,
        max_pixels=caps.max_pixels,
        slots=caps.slots,
        thumbnails={i: s.thumbnail_jpeg for i, s in styles.items() if s.thumbnail_jpeg},
        titles={i: s.name for i, s in styles.items()},
        pace={p.method: (p.seconds, p.seconds_per_mp) for p in caps.pace},
        devices=tuple((d.name, d.memory, d.slots) for d in caps.devices),
    )


def wire_offer(offer: OfferJob, *, resume: bool = True) -> Offer:
    """An offer from a node's outbox as a protocol message (docs/protocol.md, `offer`).

    The images are already scaled to the job's size; `size` tells the engine the long side.
    One fast style travels as `style_id`, a blend of several as the `style_mix` parameter.
    The start picture travels only if `resume` (the node speaks protocol version 2).
    """
    start = offer.start_png if resume else None
    params: dict[str, Scalar] = dict(offer.params)
    params.update(epochs=offer.epochs, size=max(offer.width, offer.height))
    style_id: str | None = None
    if len(offer.fast_styles) == 1:
        style_id = offer.fast_styles[0][0]
    elif offer.fast_styles:
        params["style_mix"] = ",".join(f"{name}:{w:g}" for name, w in offer.fast_styles)
    return Offer(
        job_id=offer.job_id,
        lease_id=offer.lease,
        method=offer.method,
        params=params,
        style_id=style_id,
        style_images=tuple(StyleImage(data, float(w)) for data, w in offer.style_images),
        content=offer.content_png,
        start_image=start,
        start_epoch=offer.start_epoch if start is not None else 0,
    )
