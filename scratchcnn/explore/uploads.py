"""Uploaded images, handled with care: :func:`decode_upload` and the limits it enforces.

    decode_upload(data)        the bytes of an upload -> uint8 (3, 32, 32), or ApiError 400/413/503
    png_data_uri(image_uint8)  (3, H, W) uint8 -> "data:image/png;base64,..." for the page

An upload is decoded from memory (never written to disk). Its pixel count is read
from the header before any pixel is decoded, and Pillow's decompression-bomb
warning is an error. ``scratchcnn.explore.http`` limits the body to
MAX_UPLOAD_BYTES before it is read.

Memory: a 40-Mpx picture holds 160 MB of pixels once decoded (Pillow keeps RGB in
4 bytes a pixel), 320 MB while converted to RGB. So uploads are decoded one at a
time, all in one thread (the others wait up to DECODE_WAIT seconds, then get a
503): each decode then reuses the memory the last one freed, where one decode per
request thread left each thread's malloc arena holding its own. An RGB image is
resized without a copy, and a JPEG is decoded at 1/2, 1/4 or 1/8 scale (Pillow's
``draft``, the JPEG decoder's own downscaling) when it is that much larger than
32x32. Six 40-Mpx uploads at once raised the server's peak memory by 1.7 GB; the
bound now is in tests/test_explore.py.
"""
import base64
import concurrent.futures
import io
import warnings

import numpy as np

from scratchcnn.explore.errors import ApiError

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000           # checked from the image header, before decoding
DECODE_WAIT = 30.0                       # s an upload may wait for its turn and its decoding, then 503
_decoder = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="explore-decode")


def png_data_uri(image_uint8):
    """(3, H, W) uint8 -> "data:image/png;base64,..." (Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_uint8.transpose(1, 2, 0))).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_upload(data):
    """The bytes of an uploaded image -> uint8 (3, 32, 32): the whole picture resized to
    32x32 with Pillow's BILINEAR (not centre-cropped like ``data.load_image``).

    Refuses (ApiError 400/413) anything Pillow cannot identify, formats other than
    PNG/JPEG/GIF/BMP/WEBP, images over MAX_UPLOAD_PIXELS (read from the header, before
    any pixel is decoded) and anything Pillow flags as a decompression bomb; 503 when
    other uploads kept it waiting DECODE_WAIT seconds.
    """
    if not data:
        raise ApiError(400, "the upload is empty; choose a PNG or JPEG file")
    # One thread also keeps warnings.catch_warnings (global state) to one decode at a time.
    decoding = _decoder.submit(_decode, data)
    try:
        return decoding.result(timeout=DECODE_WAIT)
    except concurrent.futures.TimeoutError:
        decoding.cancel()                               # if it has not started: never will
        raise ApiError(503, "the server is busy decoding other uploads; try again in a moment") from None


def _decode(data):
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.format not in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
                    raise ApiError(400, f"{im.format} images are not accepted; upload a PNG or JPEG")
                if im.width * im.height > MAX_UPLOAD_PIXELS:
                    raise ApiError(413, f"the image is {im.width}x{im.height} pixels, more than "
                                        f"{MAX_UPLOAD_PIXELS:,}; upload a smaller picture")
                if im.format == "JPEG":
                    im.draft("RGB", (32, 32))          # decode at the smallest scale still >= 32x32
                rgb = im if im.mode == "RGB" else im.convert("RGB")
                arr = np.asarray(rgb.resize((32, 32), Image.BILINEAR), dtype=np.uint8)
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "Pillow's decompression-bomb guard refused the image (too many pixels); "
                            "upload a smaller picture") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise ApiError(400, "the upload is not an image that can be read (a whole PNG, JPEG, GIF, BMP "
                            "or WebP file); upload a PNG or JPEG") from None
    return arr.transpose(2, 0, 1).copy()

