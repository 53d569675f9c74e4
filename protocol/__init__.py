"""The relay–node wire protocol, sans-IO: bytes in, messages out; messages in, bytes out.

Needs only the standard library and msgpack. See docs/protocol.md for the spec.
"""
