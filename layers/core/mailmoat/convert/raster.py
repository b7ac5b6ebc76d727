"""The confined child for pixels: an image, or a PDF's first pages rendered by poppler's
pdftoppm, written as a new PDF of images by Pillow, so nothing of the original's objects,
scripts or actions survives. argv: image|pdf input output max-pages dpi."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

# Pillow raises DecompressionBombError past twice this; 50 megapixels is a large photo.
Image.MAX_IMAGE_PIXELS = 50_000_000


def _pages_of_pdf(src: Path, out_dir: Path, max_pages: int, dpi: int) -> list[Path]:
    subprocess.run(["pdftoppm", "-q", "-r", str(dpi), "-f", "1", "-l", str(max_pages),
                    "-scale-to", "2000", "-png", str(src), str(out_dir / "page")],
                   check=True, stdin=subprocess.DEVNULL, timeout=600)
    return sorted(out_dir.glob("page*.png"))


def main(argv: list[str]) -> int:
    kind, src, dst, max_pages, dpi = argv[0], Path(argv[1]), Path(argv[2]), int(argv[3]), int(argv[4])
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        if kind == "pdf":
            paths = _pages_of_pdf(src, Path(tmp), max_pages, dpi)
            if not paths:
                sys.stderr.write("no pages rendered\n")
                return 2
            frames = [Image.open(p).convert("RGB") for p in paths]
        else:
            with Image.open(src) as img:
                img.seek(0)  # an animated GIF: its first frame
                frames = [img.convert("RGB")]
        frames[0].save(dst, "PDF", resolution=float(dpi), save_all=True,
                       append_images=frames[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
