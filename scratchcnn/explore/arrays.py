"""How the explorer sends arrays: ``encode``, base64 of little-endian float32 with the shape."""
import base64

import numpy as np


def encode(a):
    """float array -> {"shape", "data": base64 of little-endian float32, "min", "max"}."""
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii"),
            "min": float(a.min()) if a.size else 0.0, "max": float(a.max()) if a.size else 0.0}
