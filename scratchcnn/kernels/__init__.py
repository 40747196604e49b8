"""numba kernels: the hot loops behind scratchcnn's layers.

Every kernel here has a plain NumPy twin in ``scratchcnn.reference`` (or in the
same module, named ``*_reference``) that states what it computes; the tests
check one against the other.

Debugging tip: ``NUMBA_DISABLE_JIT=1 python ...`` runs every kernel as plain
Python, so you can step through it in a debugger (slowly).
"""
