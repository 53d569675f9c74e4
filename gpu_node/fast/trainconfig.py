"""The settings of one training run, importable without torch (the `train` command's
help shows their defaults).
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from gpu_node.errors import BadInputError

# The layers of the perceptual loss (Johnson et al.): content at relu2_2 as in the paper.
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu2_2"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved in checkpoints and in the model's metadata."""

    dataset: Path
    style: Path
    out: Path
    name: str = ""
    iterations: int = 10_000
    batch_size: int = 4
    lr: float = 1e-3
    image_size: int = 256
    style_size: int = 512
    checkpoint_interval: int = 5_000
    content_weight: float = 1.0
    style_weight: float = 30.0
    tv_weight: float = 100.0
    content_layer: str = CONTENT_LAYER
    seed: int = 0

    def validate(self) -> None:
        """BadInputError for values no run can use."""
        if self.iterations < 1 or self.batch_size < 1 or self.checkpoint_interval < 1:
            raise BadInputError("iterations, batch size and checkpoint interval must be >= 1")
        if not 32 <= self.image_size <= 2048 or not 32 <= self.style_size <= 4096:
            raise BadInputError("image size must be 32..2048 and style size 32..4096")
        if self.lr <= 0 or min(self.content_weight, self.style_weight, self.tv_weight) < 0:
            raise BadInputError("the learning rate must be positive and loss weights >= 0")
        if self.content_layer not in {"relu2_2", "relu3_3"}:
            raise BadInputError("the content layer must be relu2_2 or relu3_3")

    @property
    def checkpoint_path(self) -> Path:
        """Where checkpoints of this run go."""
        return self.out.with_name(self.out.name + ".ckpt")

    def params(self) -> dict[str, object]:
        """The training parameters as plain values for the model's metadata."""
        values = asdict(self)
        del values["out"]
        values["dataset"], values["style"] = self.dataset.name, self.style.name
        return values
