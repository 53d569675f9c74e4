"""Errors of the node side, drawn as a tree.

    NodeError                  base: every error the node reports to a person or the relay
    ├── BadInputError          the caller's image or parameter is unusable (CLI exit 2)
    │   └── ImageError         a file is not a usable image (corrupt, bomb, too small, ...)
    ├── WeightsError           model weights missing, corrupt or of the wrong shape
    ├── CapacityError          the job does not fit the device (memory, pixels)
    └── Cancelled              the job was cancelled through its cancel flag

Each carries a message a person can read; none should surface as a traceback.
"""


class NodeError(Exception):
    """Base of every error the node reports."""


class BadInputError(NodeError):
    """The caller's image or parameter is unusable."""


class ImageError(BadInputError):
    """A file is not a usable image."""


class WeightsError(NodeError):
    """Model weights are missing, corrupt or of the wrong shape."""


class CapacityError(NodeError):
    """The job does not fit the device."""


class Cancelled(NodeError):
    """The job was cancelled through its cancel flag."""
