"""Generators of sample media for tests and benchmarks: real files, built in memory.

Each function returns bytes of a file a phone, a server or an attacker could
send: photos of a given size (with noise, so they compress like photos), EXIF
with orientation and GPS, HEIC, animated and bomb GIFs, a PNG decompression
bomb, truncated files, vCards, error pages, SVG with script, MP4 and PDF headers.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib

import numpy as np
import pillow_heif
from PIL import Image, ImageDraw

pillow_heif.register_heif_opener()

GPS_IFD = 0x8825
ORIENTATION = 0x0112


# --- images -------------------------------------------------------------------------


def photo(width: int, height: int, *, noise: int = 6, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth colour fields, a few shapes, uniform sensor noise."""
    rng = np.random.default_rng(seed)
    sw, sh = max(width // 16, 2), max(height // 16, 2)
    y, x = np.mgrid[0:sh, 0:sw].astype(np.float32)
    r = 128 + 100 * np.sin(x / sw * 9.42) * np.cos(y / sh * 3.14)
    g = 128 + 90 * np.cos((x + y) / (sw + sh) * 12.56)
    b = 128 + 80 * np.sin(np.hypot(x - sw / 2, y - sh / 2) / max(sw, sh) * 20)
    small = Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))
    im = small.resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        s = int(rng.integers(max(width // 40, 1), max(width // 6, 2)))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse([x0, y0, x0 + s, y0 + s], fill=colour)
    if noise:
        arr = np.asarray(im, dtype=np.int16)
        arr = arr + rng.integers(-noise, noise + 1, size=arr.shape, dtype=np.int16)
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return im


def exif_block(*, orientation: int | None = None, gps: bool = False) -> Image.Exif:
    """EXIF with a camera make, optionally an orientation tag and a GPS position."""
    exif = Image.Exif()
    exif[0x010F] = "SampleCam"
    exif[0x0110] = "Model 1"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    if gps:
        exif.get_ifd(GPS_IFD).update({1: "N", 2: (40.0, 26.0, 46.0), 3: "W", 4: (79.0, 58.0, 56.0)})
    return exif


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode an image with Pillow into bytes."""
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg(
    width: int = 64,
    height: int = 48,
    *,
    quality: int = 90,
    noise: int = 6,
    subsampling: int = 2,
    orientation: int | None = None,
    gps: bool = False,
    progressive: bool = False,
    seed: int = 0,
) -> bytes:
    """A JPEG photo of the given size, optionally with EXIF orientation and GPS."""
    params: dict[str, object] = {
        "quality": quality,
        "subsampling": subsampling,
        "progressive": progressive,
    }
    if orientation is not None or gps:
        params["exif"] = exif_block(orientation=orientation, gps=gps)
    return encode(photo(width, height, noise=noise, seed=seed), "JPEG", **params)


def asymmetric(width: int = 60, height: int = 30) -> Image.Image:
    """Red left half, blue right half: shows whether a rotation was applied."""
    im = Image.new("RGB", (width, height), (220, 30, 30))
    ImageDraw.Draw(im).rectangle([width // 2, 0, width, height], fill=(30, 30, 220))
    return im


def rotated_jpeg(*, orientation: int = 6, gps: bool = True) -> bytes:
    """A 60x30 JPEG stored sideways: EXIF orientation 6 means display it as 30x60."""
    exif = exif_block(orientation=orientation, gps=gps)
    return encode(asymmetric(), "JPEG", quality=90, exif=exif)


@functools.cache
def camera_jpeg_12mp() -> bytes:
    """A 12-megapixel (4000x3000) JPEG of about 8 MB: noisy, quality 95, 4:4:4, EXIF+GPS."""
    im = photo(4000, 3000, noise=8, seed=12)
    exif = exif_block(orientation=1, gps=True)
    return encode(im, "JPEG", quality=95, subsampling=0, exif=exif)


def png(
    width: int = 64, height: int = 48, *, alpha: bool = False, noise: int = 6, text: bool = False
) -> bytes:
    """A PNG photo; with `alpha`, a half-transparent left side; with `text`, a tEXt chunk."""
    im = photo(width, height, noise=noise)
    if alpha:
        im = im.convert("RGBA")
        mask = Image.new("L", im.size, 255)
        ImageDraw.Draw(mask).rectangle([0, 0, width // 2, height], fill=40)
        im.putalpha(mask)
    params: dict[str, object] = {}
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Comment", "taken at home")
        params["pnginfo"] = info
        params["exif"] = exif_block(gps=True)
    return encode(im, "PNG", **params)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 12_000, height: int = 12_000) -> bytes:
    """A valid 1-bit PNG of width x height black pixels: a few KB that decode to many MB."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 1000) for _ in range(height // 1000)]
    parts.append(comp.compress(row * (height % 1000)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def gif_animated(
    frames: int = 6, width: int = 48, height: int = 32, *, duration: int = 90, loop: int = 0
) -> bytes:
    """An animated GIF whose frames differ (a moving square), with durations and a loop count."""
    images = []
    for i in range(frames):
        im = Image.new("RGB", (width, height), (250, 250, 240))
        x = (i * width // max(frames, 1)) % width
        ImageDraw.Draw(im).rectangle([x, 4, x + width // 4, height - 4], fill=(200, 20, 20 + i))
        images.append(im)
    durations = [duration + 10 * (i % 3) for i in range(frames)]
    return encode(
        images[0], "GIF", save_all=True, append_images=images[1:], duration=durations, loop=loop
    )


@functools.cache
def gif_photo_animated(frames: int = 12, width: int = 480, height: int = 360) -> bytes:
    """A large animated GIF of noisy photo frames (hard to compress, like real GIF clips)."""
    images = [
        photo(width, height, noise=14, seed=i).quantize(256, method=Image.Quantize.FASTOCTREE)
        for i in range(frames)
    ]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=70, loop=0)


def gif_many_frames(count: int = 5000) -> bytes:
    """A GIF with `count` 1x1 frames, built by hand (Pillow would merge identical frames)."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    frame = (
        b"\x21\xf9\x04\x00\x02\x00\x00\x00"  # graphic control: 20 ms
        + b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"  # image descriptor 1x1
        + b"\x02\x02\x44\x01\x00"  # LZW data of one pixel
    )
    return header + loop + frame * count + b"\x3b"


def truncated(data: bytes, fraction: float = 0.6) -> bytes:
    """The first `fraction` of a file, as a dropped connection leaves it."""
    return data[: int(len(data) * fraction)]


@functools.cache
def heic(
    width: int = 64,
    height: int = 48,
    *,
    gps: bool = False,
    alpha: bool = False,
    thumbnail: int | None = None,
) -> bytes:
    """A HEIC still image (pillow-heif), optionally with GPS EXIF, transparency or an
    embedded preview whose long side is `thumbnail` (iPhones store 320x240 ones).

    Cached: the HEVC encoder takes seconds for a few hundred thousand pixels.
    """
    im = photo(width, height)
    params: dict[str, object] = {"quality": 80}
    if thumbnail:
        params["thumbnails"] = [thumbnail]
    if gps:
        params["exif"] = exif_block(gps=True)
    if alpha:
        im = im.convert("RGBA")
        im.putalpha(Image.new("L", im.size, 90))
    return encode(im, "HEIF", **params)


def webp(width: int = 64, height: int = 48, *, quality: int = 85) -> bytes:
    """A lossy WebP photo."""
    return encode(photo(width, height), "WEBP", quality=quality)


def bmp(width: int = 64, height: int = 48) -> bytes:
    """An uncompressed BMP."""
    return encode(photo(width, height), "BMP")


def tiff(width: int = 64, height: int = 48) -> bytes:
    """An uncompressed TIFF."""
    return encode(photo(width, height), "TIFF")


# --- contact cards ----------------------------------------------------------------


VCARD_21 = (
    b"BEGIN:VCARD\r\n"
    b"VERSION:2.1\r\n"
    b"N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;J=C3=\r\n"
    b"=BCrgen;;;\r\n"
    b"TEL;CELL;PREF:+1 (555) 010-0100\r\n"
    b"TEL;WORK;VOICE:+1 555 010 0101\r\n"
    b"EMAIL;INTERNET:juergen@example.com\r\n"
    b"ORG:Acme Ltd;Field Service\r\n"
    b"END:VCARD\r\n"
)

VCARD_30 = (
    b"BEGIN:VCARD\n"
    b"VERSION:3.0\n"
    b"PRODID:-//Apple Inc.//iPhone OS 17.0//EN\n"
    b"N:Appleseed;Jane;;Dr.;\n"
    b"FN:Dr. Jane Appleseed\n"
    b"ORG:Example\\, Inc.;\n"
    b"item1.TEL;type=CELL;type=VOICE;type=pref:+15550100100\n"
    b"item1.X-ABLabel:mobile\n"
    b"EMAIL;type=INTERNET;type=HOME;type=pref:jane.appleseed@exam\n"
    b" ple.com\n"
    b"PHOTO;ENCODING=b;TYPE=JPEG:" + b"QUJD" * 5000 + b"\n"
    b"END:VCARD\n"
)

VCARD_40 = (
    b"BEGIN:VCARD\r\n"
    b"VERSION:4.0\r\n"
    b"FN:Ren\xc3\xa9 Fran\xc3\xa7ois\r\n"
    b'TEL;VALUE=uri;TYPE="voice,cell":tel:+1-555-555-0199\r\n'
    b"EMAIL:rene@example.org\r\n"
    b"END:VCARD\r\n"
)

VCARD_XSS = (
    b"BEGIN:VCARD\r\nVERSION:3.0\r\n"
    b'FN:<script>alert("x")</script><img src=x onerror=alert(1)>\r\n'
    b"TEL:+15550100\r\nEND:VCARD\r\n"
)


def vcard(name: str = "Pat Example", phone: str = "+15550100123") -> bytes:
    """A minimal vCard 3.0."""
    text = f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nTEL;TYPE=CELL:{phone}\r\nEND:VCARD\r\n"
    return text.encode()


# --- things that are not what they claim ---------------------------------------------

HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
    b"<body><h1>Not Found</h1><p>The requested media was not found on this server.</p>"
    b"</body></html>\n" + b"<!-- padding -->\n" * 200
)

TWILIO_401_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<TwilioResponse><RestException>'
    b"<Code>20003</Code><Detail>Your AccountSid or AuthToken was incorrect.</Detail>"
    b"<Message>Authentication Error - No credentials provided</Message>"
    b"<MoreInfo>https://www.twilio.com/docs/errors/20003</MoreInfo><Status>401</Status>"
    b"</RestException></TwilioResponse>"
)

TWILIO_401_JSON = (
    b'{"code": 20003, "message": "Authenticate", '
    b'"more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}'
)

SVG_WITH_SCRIPT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100" onload="alert(1)">'
    b'<script type="text/javascript">fetch("/api/messages").then(r=>r.text())</script>'
    b'<rect width="100" height="100" fill="red"/></svg>\n'
)


def mp4_header(brand: bytes = b"isom", size: int = 4096) -> bytes:
    """The start of an MP4 file: ftyp, then a free box and an mdat of zeros."""
    ftyp = struct.pack(">I4s4sI", 24, b"ftyp", brand, 0x200) + brand + b"mp41"
    free = struct.pack(">I4s", 8, b"free")
    mdat = struct.pack(">I4s", size, b"mdat") + bytes(size - 8)
    return ftyp + free + mdat


def pdf(flate_content: bytes | None = None) -> bytes:
    """A small valid one-page PDF; with `flate_content`, the page's content stream
    holds those bytes compressed (FlateDecode)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    if flate_content is not None:
        stream = zlib.compress(flate_content)
        objects[2] = objects[2].replace(b" >>", b" /Contents 4 0 R >>")
        objects.append(
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream)
            + stream
            + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _zip(entries: dict[str, str | bytes]) -> bytes:
    """A zip archive of `entries` (name: content), in order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buf.getvalue()


def docx() -> bytes:
    """A zip laid out like a Word document (entry names are what identify it)."""
    return _zip(
        {
            "[Content_Types].xml": '<?xml version="1.0"?><Types/>',
            "_rels/.rels": "<Relationships/>",
            "word/document.xml": "<w:document/>",
        }
    )


def pkpass() -> bytes:
    """A zip laid out like an Apple Wallet pass."""
    return _zip({"icon.png": png(8, 8), "pass.json": '{"formatVersion": 1}', "manifest.json": "{}"})


def plain_zip() -> bytes:
    """An ordinary zip archive."""
    return _zip({"readme.txt": "hello"})


WINDOWS_EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(4096)
