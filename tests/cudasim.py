"""Run the CUDA tests on numba's CUDA simulator where no GPU is present.

Importing this module sets ``NUMBA_ENABLE_CUDASIM=1`` unless the variable is set
already or the CUDA driver sees a device.  It must run before anything imports
``numba.cuda``: numba-cuda chooses between the simulator and the driver once, on
that first import, from ``numba.config`` (which numba fills from the environment
when numba itself is imported, hence the ``reload_config`` below when numba is
already there).  nadam imports ``numba.cuda`` only on the first use of a device
array, so importing this module from a conftest or at the top of a test module
(both run while pytest collects, before any test) is early enough.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings


def gpu_present() -> bool:
    """Whether the CUDA driver sees a device, asked through ctypes (importing
    numba.cuda to find out would fix the simulator choice too early)."""
    name = {"win32": "nvcuda.dll", "darwin": ""}.get(sys.platform, "libcuda.so.1")
    if not name:
        return False
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return False
    count = ctypes.c_int(0)
    return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def nvvm_available() -> bool:
    """Whether NVVM and NVRTC load (``pip install nvidia-nvvm nvidia-cuda-nvrtc``): what
    compiling kernels to PTX needs, with or without a GPU."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        load_nvidia_dynamic_lib("nvvm")
        load_nvidia_dynamic_lib("nvrtc")
    except Exception:
        return False
    return True


GPU = gpu_present()

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not GPU:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba" in sys.modules:
        sys.modules["numba"].config.reload_config()
    if "numba.cuda" in sys.modules:
        warnings.warn(
            "numba.cuda was imported before the CUDA simulator could be enabled: the CUDA "
            "tests will find no device; import cudasim first (tests/conftest.py)",
            stacklevel=2,
        )
