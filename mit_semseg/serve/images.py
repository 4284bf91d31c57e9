"""A request's image: only image files, checked for size from their header before a pixel is decoded."""

from __future__ import annotations

import io
import warnings
from email.parser import BytesParser
from email.policy import HTTP

import numpy as np
from PIL import Image

from ..data.imageio import decode_image
from ..data.records import DataError

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp"}


class BadRequest(Exception):
    """What was wrong with a request, and the HTTP status that says so."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def image_bytes(body: bytes, content_type: str) -> bytes:
    """The image file of a request: its whole body, or the first file of a multipart form."""
    if not content_type.lower().startswith("multipart/form-data"):
        return body
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BadRequest(400, "a multipart/form-data body that does not parse as one (its boundary?)")
    for part in message.iter_parts():
        if part.get_filename() is not None or part.get_param("name", header="content-disposition") == "image":
            return part.get_payload(decode=True) or b""
    raise BadRequest(400, "the multipart form has no file: send the image as a file field named 'image'")


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """An RGB uint8 array of an uploaded JPEG, PNG, WebP or BMP file whose header says at most `max_pixels`."""
    if not data:
        raise BadRequest(400, "the request has no image: send the file as the body or as a form field 'image'")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                kind, (width, height) = header.format, header.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadRequest(413, f"the image is above the limit of {max_pixels} pixels: {err}") from None
    except Exception:  # Pillow raises many kinds for what is not an image
        raise BadRequest(415, f"not an image file: send {', '.join(FORMATS)}") from None
    if kind not in FORMATS:
        raise BadRequest(415, f"images in {kind} are not accepted: send {', '.join(FORMATS)}")
    if width * height > max_pixels:
        raise BadRequest(
            413, f"the image is {width} x {height} = {width * height} pixels, above the limit of {max_pixels}"
        )
    try:
        image = decode_image(data, "(the request's image)")
    except DataError as err:
        raise BadRequest(400, f"the {kind} file is corrupt or truncated: {err}") from None
    if image.shape[:2] != (height, width):  # a header that lies about the size
        raise BadRequest(400, f"the {kind} file's header says {width} x {height}, its pixels differ")
    return image
