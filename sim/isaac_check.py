"""`python -m sim.isaac_check`: the one-off check an RTX user runs after installing Isaac Sim.

Prints the render time per frame (RGB + depth, synchronous) with rt_subframes 1 and 4 at 256 and 512 px on sampled
smoke scenes, then runs the camera contract (sim/camera_contract.py) on Isaac, and writes isaac_vs_mujoco.png with
the same scenes from both backends side by side. Exits 0 when every contract case passes, 1 when one fails and 2
when Isaac Sim cannot run here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

COMMAND = "python -m sim.isaac_check"


def _timing(sizes: list[int], subframes: list[int], frames: int) -> list[tuple[int, int, float]]:
    from configs import load_config
    from sim.isaac_backend import IsaacRenderer
    from sim.poses import sample_pose
    from sim.scene_sampler import SceneSampler

    cfg = load_config("smoke").sim
    sampler = SceneSampler(cfg.scene, cfg.assets)
    rows = []
    for size in sizes:
        K = np.array([[size, 0.0, size / 2], [0.0, size, size / 2], [0.0, 0.0, 1.0]])
        for rt in subframes:
            rng = np.random.default_rng(0)
            with IsaacRenderer(size, size, rt_subframes=rt) as r:
                r.load(sampler.sample(rng, seed=0))
                r.render(K, sample_pose(rng, cfg.poses.desired))  # first frame compiles and uploads
                t0 = time.perf_counter()
                for _ in range(frames):
                    r.render(K, sample_pose(rng, cfg.poses.initial))
                rows.append((size, rt, 1e3 * (time.perf_counter() - t0) / frames))
            print(f"  {size} px, rt_subframes {rt}: {rows[-1][2]:.1f} ms/frame", flush=True)
    return rows


def _contract(cases: int) -> list[tuple[str, int, int, float, bool]]:
    from sim.camera_contract import check_case, random_case
    from sim.isaac_backend import IsaacRenderer

    rows = []
    for W, H in [(224, 224), (256, 256), (512, 512), (320, 240)]:
        rng = np.random.default_rng(W * 1000 + H)
        with IsaacRenderer(W, H) as r:
            for _ in range(cases):
                res = check_case(r, *random_case(rng, W, H))
                rows.append((f"{W}x{H}", res.plate_pixels, res.wrong_pixels, res.depth_error, res.ok))
    return rows


def _side_by_side(out: Path, size: int = 256, scenes: int = 4) -> Path:
    from PIL import Image

    from configs import load_config
    from sim.env import ServoEnv

    images = []
    for backend in ("isaac", "mujoco"):
        cfg = load_config("smoke", [f"sim.renderer.backend={backend}", f"sim.camera.width={size}",
                                    f"sim.camera.height={size}"]).sim  # fmt: skip
        with ServoEnv(cfg) as env:
            images.append(np.concatenate([env.reset(seed).rgb for seed in range(scenes)], axis=1))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "isaac_vs_mujoco.png"
    Image.fromarray(np.concatenate(images, axis=0)).save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Time Isaac renders, run the camera contract and write the comparison image."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__)
    parser.add_argument("--frames", type=int, default=50, help="timed frames per setting")
    parser.add_argument("--cases", type=int, default=4, help="contract cases per image size")
    parser.add_argument("--out", type=Path, default=Path("runs/isaac_check"), help="where the PNG goes")
    args = parser.parse_args(argv)
    from sim.isaac_backend import IsaacUnavailable, require_isaac

    try:
        require_isaac()
    except IsaacUnavailable as err:
        parser.exit(2, f"{COMMAND}: {err}\n")
    print("render time (RGB + distance_to_image_plane, synchronous step):", flush=True)
    timing = _timing([256, 512], [1, 4], args.frames)
    contract = _contract(args.cases)
    png = _side_by_side(args.out)
    print(f"\n`{COMMAND} --frames {args.frames} --cases {args.cases}`\n")
    print("| size | rt_subframes | ms/frame | FPS |\n|---|---|---|---|")
    for size, rt, ms in timing:
        print(f"| {size} | {rt} | {ms:.1f} | {1e3 / ms:.0f} |")
    print("\n| image | plate px | wrong px | depth error (m) | ok |\n|---|---|---|---|---|")
    for name, px, wrong, depth, ok in contract:
        print(f"| {name} | {px} | {wrong} | {depth:.2e} | {'yes' if ok else 'NO'} |")
    passed = sum(row[-1] for row in contract)
    print(f"\nisaac check: contract {passed}/{len(contract)} cases pass; comparison image {png}")
    return 0 if passed == len(contract) else 1


if __name__ == "__main__":
    sys.exit(main())
