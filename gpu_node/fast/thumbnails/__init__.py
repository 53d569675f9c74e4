"""JPEG thumbnails of the 26 built-in styles, made by `python -m gpu_node thumbnails`."""
