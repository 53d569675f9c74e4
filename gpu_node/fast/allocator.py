"""Keep freed memory in the process, so full-size feature maps do not page-fault anew.

glibc serves every allocation over 32 MB with a fresh mmap and unmaps it on free; a
1024x768 image with 32 channels is 100 MB, so each layer of a fast network paid for
25,000 page faults, about a third of its CPU time. Turning mmap off for the heap and
never trimming it makes later allocations reuse memory already touched. This changes the
whole process, so only entry points (the CLI, the daemon, benchmarks) call it.
"""

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER = 2**31 - 1


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory; False where that is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER))
    log.debug("malloc set to keep freed memory: %s", done)
    return done
