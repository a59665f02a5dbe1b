"""What `sim.assets` resolves to: the asset folders, checked, and which of their assets fall in each split.

Every job that draws scenes builds one `AssetCatalogue` before Ray starts: a missing, empty or unreadable folder is
then an `AssetFolderError` naming the key and the path within seconds, not a crash inside a Ray actor. The same object
gives the scene sampler its assets, the CLIs their one-line split counts (`lines`), the small-split warnings
(`warnings`) and every output its record of the assets (`summary`: shard sidecars, checkpoints, results.md).
Folders are split per folder by `assets.splits.folder_split`; procedural assets by generator seed.
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass
from typing import Any

from assets import MESH_FAMILIES, TEXTURE_FAMILIES, ImageFolder, MeshFolder
from assets.splits import SPLITS, Split, folder_split
from configs.schema import AssetsConfig

# A split with fewer folder assets than this shows the network few distinct objects or textures.
FEW_ASSETS = 5
# How many of a folder's smallest files the pre-flight check tries to load before calling the folder unreadable.
LOAD_TRIES = 3


class AssetFolderError(ValueError):
    """An asset folder that cannot serve the run; the message names the config key and the path."""


@dataclass(frozen=True)
class AssetKind:
    """One kind of asset (meshes, textures or skies): its config key, whether procedural ones are drawn too (how many
    families), its folders and, per split, the (folder, name) pairs the sampler draws from."""

    kind: str
    key: str
    procedural_families: int
    folders: tuple[Any, ...]
    entries: dict[str, list[tuple[Any, str]]]

    def count(self, split: Split) -> int:
        """Folder assets in `split`."""
        return len(self.entries[split])


_KINDS = (  # kind, config key of its folders, salt of its split, config key of its procedural switch
    ("meshes", "mesh_dirs", "mesh", "procedural_meshes"),
    ("textures", "texture_dirs", "texture", "procedural_textures"),
    ("skies", "sky_dirs", "sky", None),
)


def _folder(kind: str, key: str, path: str, cache_dir: str | None) -> Any:
    try:
        return MeshFolder(path, cache_dir=cache_dir) if kind == "meshes" else ImageFolder(path, cache_dir=cache_dir)
    except (OSError, ValueError) as err:
        raise AssetFolderError(f"sim.assets.{key}: {path}: {err}") from None


class AssetCatalogue:
    """The folders of `sim.assets`, listed (with their cached indexes) and split; AssetFolderError for a folder that
    does not exist, is not a directory or holds no file of its kind."""

    def __init__(self, assets: AssetsConfig) -> None:
        self.assets = assets
        self.kinds: dict[str, AssetKind] = {}
        for kind, key, salt, switch in _KINDS:
            folders = tuple(_folder(kind, key, d, assets.cache_dir) for d in getattr(assets, key))
            entries: dict[str, list[tuple[Any, str]]] = {s: [] for s in SPLITS}
            for f in folders:
                for split in SPLITS:
                    entries[split] += [(f, n) for n in folder_split(f.names, split, assets.heldout_fraction, salt)]
            families = {"meshes": len(MESH_FAMILIES), "textures": len(TEXTURE_FAMILIES), "skies": 1}[kind]
            procedural = families if switch is None or getattr(assets, switch) else 0
            self.kinds[kind] = AssetKind(kind, key, procedural, folders, entries)

    def in_split(self, kind: str) -> list[tuple[Any, str]]:
        """The (folder, name) pairs of `kind` in the configured split, in folder order."""
        return self.kinds[kind].entries[self.assets.split]

    def check(self) -> None:
        """Fail before any work when the run cannot draw its scenes: a folder with no loadable file of its kind (one
        of its `LOAD_TRIES` smallest files must load), or a kind with nothing to draw in the configured split.
        AssetFolderError naming the key, the path and how to fix it."""
        for k in self.kinds.values():
            for folder in k.folders:
                _check_loadable(k, folder)
            if k.kind != "skies" and not k.procedural_families and not k.count(self.assets.split):
                a = self.assets
                raise AssetFolderError(
                    f"sim.assets.{k.key}: the {a.split} split holds no {k.kind} ({k.count('train')} train, "
                    f"{k.count('heldout')} held out at heldout_fraction {a.heldout_fraction:g}) and procedural "
                    f"{k.kind} are off; add {k.kind}, change sim.assets.heldout_fraction, or turn procedural "
                    f"{k.kind} on"
                )

    def summary(self) -> dict[str, Any]:
        """The asset record every output carries (plain JSON): the split in use, the fraction and, per kind, the
        folders (absolute), whether procedural assets are drawn and how many folder assets are in each split."""
        out: dict[str, Any] = {"split": self.assets.split, "heldout_fraction": self.assets.heldout_fraction}
        for k in self.kinds.values():
            out[k.kind] = {
                "folders": [str(f.root) for f in k.folders],
                "procedural": bool(k.procedural_families),
                **{s: k.count(s) for s in SPLITS},
            }
        return out

    def lines(self) -> list[str]:
        """One line per kind: where its assets come from and how many are in each split."""
        return [describe_kind(k, v) for k, v in self.summary().items() if isinstance(v, dict)]

    def warnings(self) -> list[str]:
        """One line per kind whose folders hold fewer than `FEW_ASSETS` assets in a split, saying how to change it."""
        frac = self.assets.heldout_fraction
        out = []
        for k in self.kinds.values():
            if not k.folders:
                continue
            train, held = k.count("train"), k.count("heldout")
            if min(train, held) >= FEW_ASSETS:
                continue
            out.append(
                f"sim.assets.{k.key}: few {k.kind} per split ({train} train, {held} held out of {train + held}); "
                f"sim.assets.heldout_fraction={frac:g} sets the held-out share: 0 trains on every one (nothing held "
                f"out for evaluation), a higher value holds more out"
            )
        return out


def check_assets(assets: AssetsConfig) -> AssetCatalogue:
    """The catalogue of `assets`, checked (`AssetCatalogue.check`); AssetFolderError naming the key and path."""
    catalogue = AssetCatalogue(assets)
    catalogue.check()
    return catalogue


def report_lines(catalogue: AssetCatalogue) -> list[str]:
    """What a CLI prints about its assets before it starts: the split in use, one line per kind, then a `warning:`
    line per kind with few assets in a split."""
    a = catalogue.assets
    head = f"assets: drawing from the {a.split} split (sim.assets.heldout_fraction {a.heldout_fraction:g})"
    return [head, *(f"  {line}" for line in catalogue.lines()), *(f"warning: {w}" for w in catalogue.warnings())]


def describe_kind(kind: str, record: dict[str, Any]) -> str:
    """`meshes: 2 train / 1 held out from /data/meshes + procedural`: one kind of a `summary` record, for people."""
    sources = [*record["folders"], *(["procedural"] if record["procedural"] else [])]
    if not record["folders"]:
        return f"{kind}: {' + '.join(sources) or 'none'}"
    return f"{kind}: {record['train']} train / {record['heldout']} held out from {' + '.join(sources)}"


def describe(summary: dict[str, Any]) -> str:
    """A `summary` record in one line: the split in use, then every kind."""
    kinds = "; ".join(describe_kind(k, v) for k, v in summary.items() if isinstance(v, dict))
    return f"{summary['split']} split (heldout_fraction {summary['heldout_fraction']:g}): {kinds}"


def _check_loadable(k: AssetKind, folder: Any) -> None:
    from assets import load_image, load_mesh

    by_size = sorted(folder.entries, key=lambda e: _size(e.mesh if k.kind == "meshes" else e.path))
    errors = []
    for entry in by_size[:LOAD_TRIES]:
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore")  # a texture problem is reported when the mesh is drawn, not here
                if k.kind == "meshes":
                    load_mesh(entry.mesh, 1.0, texture_path=entry.texture, name=entry.name)
                else:
                    load_image(entry.path, 64)
            return
        except (OSError, ValueError) as err:
            errors.append(str(err))
    raise AssetFolderError(
        f"sim.assets.{k.key}: {folder.root}: none of its {len(errors)} smallest {k.kind} loads: {errors[0]}"
    )


def _size(path: Any) -> int:
    try:
        return int(path.stat().st_size)
    except OSError:
        return 0
