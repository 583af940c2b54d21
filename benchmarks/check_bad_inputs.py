"""Every bad input of issue 6 through the real command line; prints the outcome table.

Builds a labelled folder (two classes of real seedling images plus every kind of bad file), an
unlabelled one, and the folder-level mistakes, runs `germinate train` / `predict` on them in
this process, and prints a Markdown table: input, what germinate did, exit status.

    python benchmarks/check_bad_inputs.py [--data DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def bad_files(d: Path, real: Path) -> dict[str, str]:
    """Write each kind of file into `d`; return {file name: what it is}."""
    (d / "zero.png").write_bytes(b"")
    data = real.read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "text.png").write_text("this is not an image\n")
    (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    rgb = Image.open(real).convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "rgba.png")
    rgb.convert("L").save(d / "gray.png")
    Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)).save(d / "gray16.png")
    rgb.convert("P").save(d / "palette.png")
    rgb.convert("CMYK").save(d / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(d / "exif-rotated.jpg", exif=exif.tobytes())
    Image.new("RGB", (1, 1), (60, 120, 60)).save(d / "one-pixel.png")
    Image.new("1", (10_000, 10_000)).save(d / "bomb.png")  # 100 MP, over PIL's limit
    shutil.copy(real, d / "name with spaces é.png")
    (d / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(real, d / "nested" / "deeper" / "nested.png")
    os.symlink(real.resolve(), d / "symlink.png")
    os.symlink(d / "missing.png", d / "dangling.png")
    os.symlink(d, d / "nested" / "loop")
    return {
        "zero.png": "zero-byte file", "truncated.png": "truncated PNG", "text.png": "text file named .png",
        ".DS_Store": "`.DS_Store`", "rgba.png": "RGBA PNG (half transparent)", "gray.png": "grayscale PNG",
        "gray16.png": "16-bit grayscale PNG", "palette.png": "palette PNG", "cmyk.jpg": "CMYK JPEG",
        "exif-rotated.jpg": "EXIF-rotated JPEG", "one-pixel.png": "1x1 image",
        "bomb.png": "100-megapixel image (decompression bomb)", "name with spaces é.png": "spaces and non-ASCII in the name",
        "nested.png": "image in nested folders", "symlink.png": "symlink to an image",
        "dangling.png": "dangling symlink", "loop": "symlink loop (folder linking to its parent)",
    }


def run(args: list[str]) -> tuple[int, str]:
    from germinate.cli import main as germinate

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = germinate(args)
    lines = [x for x in err.getvalue().splitlines() if x.strip()]
    warned = [x for x in lines if "could not be read" in x]  # predict's warning says more than its last line
    return code, (warned or lines or [""])[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("GERMINATE_DATA", ROOT.parent / "shared/data/plant-seedlings"))
    a = p.parse_args()
    src = Path(a.data) / "train"
    tmp = Path(tempfile.mkdtemp(prefix="germinate-bad-"))
    os.environ["GERMINATE_CACHE"] = str(tmp / "cache")
    lab = tmp / "labelled"
    for cls in ("Charlock", "Maize"):
        (lab / cls).mkdir(parents=True)
        for f in sorted((src / cls).glob("*.png"))[:8]:
            shutil.copy(f, lab / cls)
    (lab / "Empty class").mkdir()
    kinds = bad_files(lab / "Maize", sorted((src / "Maize").glob("*.png"))[0])
    unl = tmp / "unlabelled"
    unl.mkdir()
    for f in sorted((src / "Charlock").glob("*.png"))[8:12]:
        shutil.copy(f, unl)
    (unl / "corrupt.png").write_bytes(b"not a png")
    (unl / "zero.png").write_bytes(b"")

    rows: list[tuple[str, str, str]] = []
    fast = ["--size", "32", "--freeze-epochs", "1", "--epochs", "1", "--lr", "1e-3", "--quiet"]
    code, msg = run(["train", str(lab), "--out", str(tmp / "run"), *fast])
    with open(tmp / "run" / "skipped.csv", newline="", encoding="utf-8") as f:
        skipped = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
    for name, what in kinds.items():
        if name == "loop":
            outcome = "followed once; the loop is cut (no file is read twice)"
        elif name in skipped:
            outcome = f"skipped, listed in `skipped.csv`: {skipped[name]}"
        else:
            outcome = "used"
        rows.append((what, outcome, str(code)))
    rows.append(("class folder with no images", f"skipped with a warning: {skipped.get('Empty class', 'NOT LISTED')}", str(code)))

    sub = tmp / "submission.csv"
    code, msg = run(["predict", str(tmp / "run"), str(unl), "--submission", str(sub)])
    n_rows = len(sub.read_text().splitlines()) - 1 if sub.exists() else 0
    rows.append(("`predict` on a folder with 4 good and 2 unreadable images",
                 f"{n_rows} rows written; the others listed in `submission.skipped.csv`: \"{msg}\"", str(code)))
    empty = tmp / "no-images"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    one = tmp / "one-class"
    shutil.copytree(lab / "Charlock", one / "Charlock")
    imageless = tmp / "imageless"  # class folders, none holding an image
    shutil.copytree(empty, imageless / "Charlock")
    (imageless / "Maize").mkdir()
    cases = [
        ("unlabelled folder with no images", ["predict", str(tmp / "run"), str(empty), "--submission", str(tmp / "s2.csv")]),
        ("labelled folder given to `predict`", ["predict", str(tmp / "run"), str(lab), "--submission", str(tmp / "s3.csv")]),
        ("unlabelled folder given to `train`", ["train", str(unl), "--out", str(tmp / "r2"), *fast]),
        ("unlabelled folder given to `evaluate`", ["evaluate", str(tmp / "run"), str(unl)]),
        ("a single usable class", ["train", str(one), "--out", str(tmp / "r3"), *fast]),
        ("a path that does not exist", ["train", str(tmp / "nowhere"), "--out", str(tmp / "r4"), *fast]),
        ("class folders none of which holds an image", ["train", str(imageless), "--out", str(tmp / "r5"), *fast]),
        ("an output path that is a folder", ["predict", str(tmp / "run"), str(unl), "--submission", str(empty)]),
    ]
    for what, args in cases:
        code, msg = run(args)
        rows.append((what, f"refused: \"{msg}\"", str(code)))
    (tmp / "run" / "model.safetensors").write_bytes(b"\x00" * 100)
    code, msg = run(["predict", str(tmp / "run"), str(unl), "--submission", str(tmp / "s4.csv")])
    rows.append(("a truncated model file", f"refused: \"{msg}\"", str(code)))

    print("| input | outcome | exit |\n| --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(x.replace(str(tmp) + "/", "").replace("|", "/") for x in r) + " |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
