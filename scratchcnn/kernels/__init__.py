"""numba kernels: the hot loops behind scratchcnn's layers.

Every kernel here has a plain NumPy twin in ``scratchcnn.reference`` (or in the
same module, named ``*_reference``) that states what it computes; the tests
check one against the other.

Debugging tip: ``NUMBA_DISABLE_JIT=1 python ...`` runs every kernel as plain
Python, so you can step through it in a debugger (slowly).
"""
import hashlib
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def fingerprint(*modules):
    """The first 16 hex digits of the sha256 of these kernel modules' source files.

    numba's on-disk cache (``cache=True``) is keyed on the text of the file that
    defines a kernel, but a kernel that inlines or calls a jitted helper from
    another module compiles that helper's code in. A module with such helpers
    keeps their fingerprint as ``DEPENDS_SHA256``; ``tests/test_kernels.py`` checks
    it, so editing a helper means editing that line too, and the cache of every
    kernel that uses it recompiles instead of running the old code.
    """
    h = hashlib.sha256()
    for name in sorted(modules):
        with open(os.path.join(_HERE, name + ".py"), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]
