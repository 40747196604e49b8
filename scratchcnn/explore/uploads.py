"""Uploaded images, handled with care: :func:`decode_upload` and the limits it enforces.

    decode_upload(data)        the bytes of an upload -> uint8 (3, 32, 32), or ApiError 400/413
    png_data_uri(image_uint8)  (3, H, W) uint8 -> "data:image/png;base64,..." for the page

An upload is decoded from memory (never written to disk). Its pixel count is read
from the header before any pixel is decoded, and Pillow's decompression-bomb
warning is an error. ``scratchcnn.explore.http`` limits the body to
MAX_UPLOAD_BYTES before it is read.
"""
import base64
import io
import warnings

import numpy as np

from scratchcnn.explore.errors import ApiError

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000           # checked from the image header, before decoding


def png_data_uri(image_uint8):
    """(3, H, W) uint8 -> "data:image/png;base64,..." (Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_uint8.transpose(1, 2, 0))).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_upload(data):
    """The bytes of an uploaded image -> uint8 (3, 32, 32), resized like ``data.load_image``.

    Refuses (ApiError 400/413) anything Pillow cannot identify, formats other than
    PNG/JPEG/GIF/BMP/WEBP, images over MAX_UPLOAD_PIXELS (read from the header, before
    any pixel is decoded) and anything Pillow flags as a decompression bomb.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ApiError(400, "the upload is empty; choose a PNG or JPEG file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.format not in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
                    raise ApiError(400, f"{im.format} images are not accepted; upload a PNG or JPEG")
                if im.width * im.height > MAX_UPLOAD_PIXELS:
                    raise ApiError(413, f"the image is {im.width}x{im.height} pixels, more than "
                                        f"{MAX_UPLOAD_PIXELS:,}; upload a smaller picture")
                arr = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.uint8)
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "Pillow's decompression-bomb guard refused the image (too many pixels); "
                            "upload a smaller picture") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise ApiError(400, f"the upload is not an image Pillow can read ({type(e).__name__}); "
                            f"upload a PNG or JPEG") from None
    return arr.transpose(2, 0, 1).copy()

