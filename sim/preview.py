"""`python -m sim.preview`: write a PNG contact sheet of (desired, initial) image pairs for a range of seeds.

Prints where the assets come from and how many are in each split first; a bad asset folder exits 2 naming it."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from configs import add_config_arguments, config_from_args, save_config
from file_io import atomic_path
from sim.asset_catalogue import AssetFolderError, check_assets, report_lines


def label_image(img: np.ndarray, text: str) -> np.ndarray:
    """A copy of an RGB uint8 image (H, W, 3) with `text` in white on a black box at its top-left corner."""
    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, 0, 7 * len(text) + 6, 14], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return np.asarray(im)


def main(argv: list[str] | None = None) -> int:
    """Render pairs for seeds [start, start + count) and save the sheet with its resolved config."""
    from rich.progress import track

    from sim.env import ServoEnv

    parser = argparse.ArgumentParser(prog="python -m sim.preview", description=__doc__)
    parser.add_argument("--start", type=int, default=0, help="first seed (default %(default)s)")
    parser.add_argument("--count", type=int, default=12, help="number of seeds (default %(default)s)")
    parser.add_argument("--cols", type=int, default=3, help="pairs per row (default %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default runs/<run.name>/preview.png)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.count < 1 or args.cols < 1:
        parser.error("--count and --cols must be >= 1")
    cfg = config_from_args(parser, args)
    out = args.out or Path(cfg.run.root) / cfg.run.name / "preview.png"
    try:
        catalogue = check_assets(cfg.sim.assets)
    except AssetFolderError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    for line in report_lines(catalogue):
        print(line)

    t0 = time.perf_counter()
    tiles = []
    with ServoEnv(cfg.sim) as env:
        for seed in track(range(args.start, args.start + args.count), description="rendering pairs"):
            first = env.reset(seed)
            te, re = env.pose_error()
            des = label_image(env.desired_frame().rgb, f"seed {seed} desired")
            cur = label_image(first.rgb, f"initial {te * 100:.0f}cm {re:.0f}deg")
            gap = np.full((des.shape[0], 4, 3), 255, np.uint8)
            tiles.append(np.concatenate([des, gap, cur], axis=1))
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // args.cols)
    sheet = np.full((rows * (h + 8), args.cols * (w + 12), 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, args.cols)
        sheet[r * (h + 8) : r * (h + 8) + h, c * (w + 12) : c * (w + 12) + w] = tile
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".tmp.png") as tmp:  # PIL picks the format from the suffix
        Image.fromarray(sheet).save(tmp)
    save_config(cfg, out.parent, f"{out.stem}.config.yaml")
    dt = time.perf_counter() - t0
    print(f"wrote {len(tiles)} pairs (seeds {args.start}-{args.start + args.count - 1}) to {out} in {dt:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
