"""The public relay: an aiohttp web app on port 1337 and a node listener on port 5678.

The relay never imports torch: it installs and runs on a small VM without a GPU.
"""
