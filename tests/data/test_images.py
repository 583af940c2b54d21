"""Every kind of file a real folder holds: decoded correctly, or refused with a reason."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from germinate.data.images import UnreadableImage, read_image


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_rgba_palette_grayscale_16bit_and_cmyk_become_rgb(tmp_path: Path):
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # transparent: composited onto white
    gray = Image.new("L", (20, 20), 100)
    pal = Image.new("RGB", (20, 20), (0, 0, 255)).convert("P")
    g16 = Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16))
    cmyk = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # red in CMYK
    files = {
        "rgba.png": _save(rgba, tmp_path / "rgba.png"),
        "gray.png": _save(gray, tmp_path / "gray.png"),
        "pal.png": _save(pal, tmp_path / "pal.png"),
        "g16.png": _save(g16, tmp_path / "g16.png"),
        "cmyk.jpg": _save(cmyk, tmp_path / "cmyk.jpg"),
    }
    out = {k: read_image(v, 20) for k, v in files.items()}
    for arr in out.values():
        assert arr.shape == (20, 20, 3) and arr.dtype == np.uint8
    assert tuple(out["rgba.png"][10, 10]) == (255, 0, 0)
    assert tuple(out["rgba.png"][0, 0]) == (255, 255, 255)
    assert tuple(out["gray.png"][5, 5]) == (100, 100, 100)
    assert tuple(out["pal.png"][5, 5]) == (0, 0, 255)
    assert abs(int(out["g16.png"][5, 5, 0]) - round(40000 / 65535 * 255)) <= 1
    r, g, b = out["cmyk.jpg"][10, 10]
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_honoured(tmp_path: Path):
    # A wide image whose left half is red; EXIF orientation 6 means "rotate 90 degrees clockwise".
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    out = read_image(path, 20)
    # After the rotation the red half is on top; the centre crop keeps a square spanning both.
    assert out[2, 10, 0] > 200 and out[17, 10, 0] < 60


def test_non_square_images_keep_their_aspect_ratio(tmp_path: Path):
    arr = np.zeros((30, 90, 3), np.uint8)
    arr[:, 30:60] = 255  # the middle third is white: the centre crop
    out = read_image(_save(Image.fromarray(arr), tmp_path / "wide.png"), 30)
    assert out.min() == 255  # only the centre square, not squished


def test_tiny_image_is_scaled_up(tmp_path: Path):
    out = read_image(_save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "one.png"), 16)
    assert out.shape == (16, 16, 3) and tuple(out[8, 8]) == (10, 20, 30)


@pytest.mark.parametrize(
    "name,content",
    [("empty.png", b""), ("text.png", b"this is not an image\n"), ("fake.jpg", b"\xff\xd8\xff\xe0 garbage")],
)
def test_unreadable_files_raise_with_a_reason(tmp_path: Path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImage) as e:
        read_image(path, 16)
    assert str(e.value)


def test_truncated_png_is_unreadable(tmp_path: Path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    path = tmp_path / "trunc.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(UnreadableImage):
        read_image(path, 16)


def test_decompression_bomb_is_refused(tmp_path: Path):
    side = 10_000  # 100 megapixels: over PIL's 89-megapixel limit; 1-bit keeps the file tiny
    path = _save(Image.new("1", (side, side)), tmp_path / "bomb.png")
    with pytest.raises(UnreadableImage, match="too large"):
        read_image(path, 16)
