"""Loaders for assets that users download: scanned-object datasets, mesh folders, texture and environment-map folders.

Supported mesh layouts (`MeshFolder(root, layout=...)`):

- "gso", Google Scanned Objects as unpacked from Gazebo Fuel: `<root>/<model>/meshes/model.obj`, texture
  `<root>/<model>/materials/textures/texture.png`. The entry name is `<model>` (its path relative to root).
- "omniobject3d", the raw scans of OmniObject3D (`raw_scans/<category>/<category>_<NNN>/Scan/Scan.obj` with
  `Scan.mtl` and `Scan.jpg` beside it, per the dataset's README). Any `<object>/Scan/Scan.obj` under root is found, so
  root may be the dataset root, `raw_scans`, one category, or the per-category archives untarred side by side. The
  entry name is the object folder relative to root, e.g. `raw_scans/apple/apple_001`.
- "files": every OBJ, GLB, GLTF, PLY, STL or OFF file under root, recursively; the name is its relative path.
- "auto" (default): each file by its own pattern; GSO and OmniObject3D models first, then any other mesh file.

Meshes are read with trimesh (scenes merged into one mesh), keep their UVs and texture image when they have them, get
decimated to a face budget (see `assets.decimation`), and are centred at their bounding-box centre and scaled so their
largest extent equals the size the caller asks for. Vertex colours are not kept (the scene sampler picks a material);
a mesh that has them, or names a texture that is missing or unreadable, gives a TextureWarning (an error with
`strict`), and `MeshFolder.texture_problems` counts them.

Images (`ImageFolder`, `load_image`) are PNG, JPEG, BMP, TIFF, Radiance HDR and OpenEXR when the installed OpenCV can
decode it (the opencv-python-headless 5.0 wheel cannot; convert EXR to HDR). High-dynamic-range images are tonemapped
to uint8 (`tonemap`). Environment maps are expected to be equirectangular (width = 2 x height).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
import trimesh
from PIL import Image

from assets.decimation import decimate
from assets.folder_index import cached_index
from assets.mesh import Mesh

MESH_SUFFIXES: tuple[str, ...] = (".obj", ".glb", ".gltf", ".ply", ".stl", ".off")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".hdr", ".exr")
MESH_LAYOUTS: tuple[str, ...] = ("auto", "gso", "omniobject3d", "files")
# A CPU rasteriser draws 20k triangles per object comfortably; scans come with 100k to 1M.
DEFAULT_MAX_FACES = 20_000
DEFAULT_MAX_TEXTURE = 1024

Layout = Literal["auto", "gso", "omniobject3d", "files"]

_EXPECTED = {
    "gso": "Google Scanned Objects models: <root>/<model>/meshes/model.obj (+ <model>/materials/textures/texture.png)",
    "omniobject3d": "OmniObject3D raw scans: <root>/.../<object>/Scan/Scan.obj (+ Scan.jpg)",
    "files": f"mesh files ({', '.join(MESH_SUFFIXES)}) anywhere below it",
}


@dataclass(frozen=True)
class MeshEntry:
    """One mesh of a folder: its name, mesh file, the texture file its layout names (if any) and the layout."""

    name: str
    mesh: Path
    texture: Path | None
    layout: str


@dataclass(frozen=True)
class ImageEntry:
    """One image of a folder: its name (path relative to the folder) and file."""

    name: str
    path: Path


# ---------------------------------------------------------------------------------------------------------------------
# single files


def load_mesh(
    path: str | os.PathLike[str],
    size: float,
    texture_path: str | os.PathLike[str] | None = None,
    max_faces: int = DEFAULT_MAX_FACES,
    max_texture: int = DEFAULT_MAX_TEXTURE,
    name: str | None = None,
    strict: bool = False,
) -> Mesh:
    """Read a mesh, keep its UVs and texture, cap its faces, centre it and scale its largest extent to `size`.

    A texture the mesh names (MTL map_Kd, glTF image uri) that is missing or unreadable, or vertex colours (which
    the renderer does not draw), give a TextureWarning naming the mesh and the file, and the mesh loads untextured;
    with `strict`, a ValueError instead. The texture reaches the renderer through `to_rgb8`, as `load_image` reads it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file {path} does not exist")
    if not (np.isfinite(size) and size > 0):
        raise ValueError(f"mesh size must be a positive number of metres, got {size}")
    loaded = _read_trimesh(path, name)
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    faces = np.asarray(loaded.faces, dtype=np.int64)
    if not np.all(np.isfinite(vertices)):
        raise ValueError(f"mesh {path} has NaN or infinite vertex coordinates")
    uv, image = _uv_and_image(loaded)
    image = _texture_image(path, loaded, uv, image, texture_path, name, strict)
    if len(faces) > max_faces:
        vertices, faces, uv = decimate(vertices, faces, uv, max_faces)
        if len(faces) > max_faces:
            warnings.warn(f"{path}: decimated to {len(faces)} faces, above the budget of {max_faces}", stacklevel=2)
    if len(faces) < 4 or len(vertices) < 4:
        raise ValueError(f"mesh {path} has fewer than 4 usable triangles")

    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    extent = float((hi - lo).max())
    if not extent > 0:
        raise ValueError(f"mesh {path} has zero extent (all vertices coincide)")
    vertices = (vertices - (lo + hi) / 2) * (float(size) / extent)
    if image is not None:
        image = _fit(image, max_texture)
    return Mesh(name or path.stem, vertices, faces, uv, image if uv is not None else None)


def _read_trimesh(path: Path, name: str | None) -> trimesh.Trimesh:
    """The file as one trimesh mesh: a scene's textured parts packed into one atlas where that keeps every texel (a
    TextureWarning where trimesh's resampling merge has to do); ValueError for a file with no triangles."""
    try:
        loaded = trimesh.load(str(path))
        packed = _pack_textured_parts(loaded) if isinstance(loaded, trimesh.Scene) else None
        if isinstance(loaded, trimesh.Scene):
            several = sum(getattr(g.visual, "kind", None) == "texture" for g in loaded.geometry.values()) > 1
            if packed is None and several:
                warnings.warn(
                    f"mesh {name or path.name} ({path}): several textures that cannot share an atlas unchanged "
                    "(UVs outside [0, 1], or an untextured part); merged by trimesh, whose atlas resamples them",
                    TextureWarning,
                    stacklevel=3,  # load_mesh's caller
                )
            loaded = packed if packed is not None else loaded.to_mesh()  # trimesh's merge, as force="mesh" does
    except Exception as e:
        raise ValueError(f"cannot read mesh {path}: {type(e).__name__}: {e} (expected {_EXPECTED['files']})") from e
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0 or len(loaded.vertices) < 4:
        raise ValueError(f"mesh {path} has no triangles; is it empty or corrupt? (expected {_EXPECTED['files']})")
    return loaded


def _texture_image(
    path: Path,
    loaded: trimesh.Trimesh,
    uv: np.ndarray | None,
    image: np.ndarray | None,
    texture_path: str | os.PathLike[str] | None,
    name: str | None,
    strict: bool,
) -> np.ndarray | None:
    """The texture of a mesh with UVs, read as load_image reads it: the one file the mesh names, else the image
    trimesh decoded, else `texture_path`. None, with a TextureWarning (ValueError with `strict`) saying why, when a
    named texture is missing or unreadable or the mesh has vertex colours."""
    named = texture_references(path)
    refs = sorted({r for r in named if r.is_file()}) if uv is not None else []
    if len(refs) == 1:
        # The file's own pixels, read as load_image reads them: PIL (trimesh's decoder) truncates 16-bit RGB to
        # 8 bits instead of rounding, and trimesh leaves some URIs unresolved (percent-encoded ones). Several files
        # are packed by trimesh into one 8-bit atlas and kept as such.
        try:
            image = load_image(refs[0])
        except (ValueError, OSError):
            image = None  # said below, naming the file
    if uv is not None and image is None and texture_path is not None:
        # GSO's model.mtl names "texture.png" beside the OBJ while the file sits in materials/textures/,
        # so trimesh finds no image; the layout knows where it is.
        image = load_image(texture_path)
    problem = None
    if image is None:
        problem = _texture_problem(named, loaded)
    if problem is not None:
        message = f"mesh {name or path.name} ({path}): {problem}"
        if strict:
            raise ValueError(message)
        warnings.warn(message, TextureWarning, stacklevel=3)  # load_mesh's caller
    return image


class TextureWarning(UserWarning):
    """A mesh's texture is missing, unreadable, or not rendered; the mesh loads without it."""


def to_rgb8(image: np.ndarray | Image.Image) -> np.ndarray:
    """The one rule by which any decoded image becomes RGB uint8 (H, W, 3): for files (`load_image`) and for the
    images mesh libraries hand over (OBJ/MTL, glTF).

    Grey is repeated to RGB and alpha dropped; palette images expand; 16-bit integers map by /257 (0 -> 0,
    65535 -> 255); 32-bit integers (PIL's mode 'I' for 16-bit PNGs) must hold 16-bit values; floats are HDR and are
    tonemapped (`tonemap`). A (H, W, C) array is taken as RGB order. ValueError for anything else.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        elif image.mode == "1":
            image = image.convert("L")
        elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB")
        raw = np.asarray(image)
    else:
        raw = np.asarray(image)
    if raw.ndim == 2:
        raw = raw[..., None]
    if raw.ndim != 3 or raw.shape[2] not in (1, 2, 3, 4) or raw.size == 0:
        raise ValueError(f"expected an image (H, W) or (H, W, 1-4), got shape {raw.shape}")
    raw = np.repeat(raw[..., :1], 3, axis=2) if raw.shape[2] <= 2 else raw[..., :3]
    if raw.dtype == np.uint8:
        return np.ascontiguousarray(raw)
    if raw.dtype == np.bool_:
        return np.ascontiguousarray(raw.astype(np.uint8) * 255)
    if raw.dtype.kind in "ui":
        if raw.min() < 0 or raw.max() > 65535:
            raise ValueError(f"integer image with values outside 0..65535 ({raw.dtype}, {raw.min()}..{raw.max()})")
        return ((raw.astype(np.float32) / 257.0) + 0.5).astype(np.uint8)
    if raw.dtype.kind == "f":
        return tonemap(raw)
    raise ValueError(f"unsupported pixel type {raw.dtype}")


def load_image(path: str | os.PathLike[str], size: int | None = None) -> np.ndarray:
    """Read an image as RGB uint8 (H, W, 3), tonemapping HDR; `size` resizes its longer side (aspect kept)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    if path.suffix.lower() == ".exr":
        # OpenCV 4 wheels can read EXR but refuse unless this is set before the first EXR read.
        os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raw = _read_with_pillow(path)
    else:
        raw = _bgr_to_rgb(raw)
    if raw is None:
        hint = " (this OpenCV build cannot decode OpenEXR; convert it to .hdr)" if path.suffix.lower() == ".exr" else ""
        raise ValueError(f"cannot read image {path}: not a readable {'/'.join(IMAGE_SUFFIXES)} file{hint}")
    try:
        image = to_rgb8(raw)
    except ValueError as e:
        raise ValueError(f"image {path}: {e}") from None
    return _fit(image, size, exact=True) if size is not None else image


def tonemap(hdr: np.ndarray) -> np.ndarray:
    """Linear HDR RGB (H, W, 3) to display uint8: exposure to a mid-grey key, Reinhard x / (1 + x), gamma 2.2."""
    x = np.nan_to_num(np.maximum(np.asarray(hdr, dtype=np.float32), 0.0), posinf=0.0)
    luminance = x @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    # The log-average luminance is what a camera's auto-exposure would meter; map it to 18 % grey.
    key = float(np.exp(np.mean(np.log(1e-6 + luminance))))
    x = x * (0.18 / max(key, 1e-6))
    y = (x / (1.0 + x)) ** (1.0 / 2.2)
    return (np.clip(y, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# Pixels of edge replication around each texture in a packed atlas, so that filtering near a cell's edge reads the
# texture's own border instead of its neighbour's.
_ATLAS_PAD = 4


def _pack_textured_parts(scene: Any) -> trimesh.Trimesh | None:
    """A scene of several textured parts (multi-material OBJ, GLB of several primitives) as one mesh over an atlas
    holding every part's texture unchanged (our own packing: trimesh's resamples them). None when the scene has
    fewer than two textured parts, or a part without a texture, or UVs outside [0, 1] (repeating textures cannot share
    an atlas): trimesh's own merge is used then."""
    parts = scene.dump(concatenate=False)
    textured = [(g, *_uv_and_image(g)) for g in parts if len(g.faces)]
    if len(textured) < 2 or any(uv is None or image is None for _, uv, image in textured):
        return None
    if any(uv.min() < -1e-6 or uv.max() > 1 + 1e-6 for _, uv, _ in textured):
        return None
    p = _ATLAS_PAD
    width = max(image.shape[1] for _, _, image in textured) + 2 * p
    height = sum(image.shape[0] + 2 * p for _, _, image in textured)
    atlas = np.zeros((height, width, 3), np.uint8)
    vertices, faces, uvs, top, offset = [], [], [], 0, 0
    for g, uv, image in textured:
        h, w = image.shape[:2]
        atlas[top : top + h + 2 * p, : w + 2 * p] = np.pad(image, ((p, p), (p, p), (0, 0)), mode="edge")
        # u, v in [0, 1] over the texture's pixel edges; v = 0 is its bottom row (OBJ/OpenGL).
        x = p + np.clip(uv[:, 0], 0, 1) * w
        y = top + p + (1.0 - np.clip(uv[:, 1], 0, 1)) * h
        uvs.append(np.c_[x / width, 1.0 - y / height])
        vertices.append(np.asarray(g.vertices))
        faces.append(np.asarray(g.faces) + offset)
        offset += len(g.vertices)
        top += h + 2 * p
    visual = trimesh.visual.TextureVisuals(uv=np.concatenate(uvs), image=Image.fromarray(atlas))
    return trimesh.Trimesh(np.concatenate(vertices), np.concatenate(faces), visual=visual, process=False)


def _uv_and_image(loaded: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    visual = loaded.visual
    uv = getattr(visual, "uv", None) if getattr(visual, "kind", None) == "texture" else None
    if uv is None:
        return None, None
    uv = np.asarray(uv, dtype=np.float64)
    if uv.shape != (len(loaded.vertices), 2) or not np.all(np.isfinite(uv)):
        return None, None
    material = getattr(visual, "material", None)
    image = getattr(material, "image", None)
    if image is None:
        image = getattr(material, "baseColorTexture", None)  # glTF materials are PBR
    if image is None:
        return uv, None
    # The same conversion as for files: PIL's own convert("RGB") clips 16-bit grey to white.
    array = to_rgb8(image)
    # trimesh invents a 2x2 grey image for UVs without a texture (PLY); that is not the object's appearance.
    if array.shape[0] * array.shape[1] < 16:
        return uv, None
    return uv, array


def texture_references(path: str | os.PathLike[str]) -> list[Path]:
    """The image files a mesh file names: an OBJ's MTL `map_Kd` files, a glTF's (or GLB's) external image URIs.
    Paths are resolved as the formats specify (relative to the MTL / glTF file); embedded images are not listed."""
    path = Path(path)
    suffix = path.suffix.lower()
    refs: list[Path] = []
    if suffix == ".obj":
        for line in _lines(path):
            if line.startswith("mtllib "):
                mtl = path.parent / line[7:].strip()
                for entry in _lines(mtl) if mtl.is_file() else []:
                    if entry.split(maxsplit=1)[:1] == ["map_Kd"] and len(entry.split()) > 1:
                        refs.append(mtl.parent / entry.split()[-1])  # options (-s, -o, ...) come first
    elif suffix in (".gltf", ".glb"):
        doc = _gltf_json(path)
        for im in doc.get("images", []) if isinstance(doc, dict) else []:
            uri = im.get("uri") if isinstance(im, dict) else None
            if isinstance(uri, str) and not uri.startswith("data:"):
                from urllib.parse import unquote

                refs.append(path.parent / unquote(uri))
    return refs


def _lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return []


def _gltf_json(path: Path) -> Any:
    import json
    import struct

    try:
        data = path.read_bytes()
        if path.suffix.lower() == ".glb":
            # Binary glTF: 12-byte header, then a JSON chunk (length, type 'JSON', bytes).
            length, kind = struct.unpack_from("<I4s", data, 12)
            return json.loads(data[20 : 20 + length]) if kind == b"JSON" else {}
        return json.loads(data)
    except (OSError, ValueError, struct.error):
        return {}


def _texture_problem(named: list[Path], loaded: Any) -> str | None:
    """Why a mesh that names a texture, or has vertex colours, reaches the renderer without it (None: it has none)."""
    for ref in named:
        if not ref.is_file():
            return f"its texture {ref} does not exist; loading it untextured"
        try:
            load_image(ref)
        except (ValueError, OSError) as e:
            return f"its texture {ref} is unreadable ({e}); loading it untextured"
        return f"its texture {ref} did not reach the mesh (no UVs for it?); loading it untextured"
    visual = getattr(loaded, "visual", None)
    if getattr(visual, "kind", None) == "vertex":
        colors = np.asarray(visual.vertex_colors)
        if colors.size and len(np.unique(colors.reshape(-1, colors.shape[-1]), axis=0)) > 1:
            return "its vertex colours are not rendered (the scene sampler gives it a material instead)"
    return None


def _read_with_pillow(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            return to_rgb8(im)
    except Exception:
        return None


def _bgr_to_rgb(raw: np.ndarray) -> np.ndarray:
    if raw.ndim == 2:
        return np.repeat(raw[..., None], 3, axis=2)
    if raw.shape[2] == 1 or raw.shape[2] == 2:  # grey, or grey + alpha
        return np.repeat(raw[..., :1], 3, axis=2)
    return raw[..., 2::-1]  # BGR(A) -> RGB, alpha dropped


def _fit(image: np.ndarray, size: int | None, exact: bool = False) -> np.ndarray:
    """Resize so the longer side is `size` (only shrink unless exact), keeping the aspect ratio."""
    if size is None:
        return image
    if int(size) < 1:
        raise ValueError(f"image size must be a positive number of pixels, got {size}")
    h, w = image.shape[:2]
    longest = max(h, w)
    if longest == size or (not exact and longest < size):
        return image
    scale = size / longest
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(np.ascontiguousarray(image), shape, interpolation=interpolation))


# ---------------------------------------------------------------------------------------------------------------------
# folders


class _Listing:
    """Lookup by index or name over a folder's entries (each entry has a `name`)."""

    kind = "entry"
    root: Path
    entries: tuple[Any, ...]
    _by_name: dict[str, int]

    @property
    def names(self) -> list[str]:
        """Entry names (paths relative to root), sorted."""
        return [e.name for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            if key not in self._by_name:
                raise KeyError(f"no {self.kind} named {key!r} under {self.root}")
            return self.entries[self._by_name[key]]
        return self.entries[range(len(self.entries))[key]]


class MeshFolder(_Listing):
    """The meshes of a downloaded dataset or plain folder, listed once and cached (see `assets.folder_index`)."""

    kind = "mesh"

    def __init__(
        self, root: str | os.PathLike[str], layout: Layout = "auto", cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        if layout not in MESH_LAYOUTS:
            raise ValueError(f"unknown mesh layout {layout!r}; expected one of: {', '.join(MESH_LAYOUTS)}")
        self.root = _existing_folder(root, "mesh")
        self.layout = layout
        index = cached_index(self.root, f"meshes:{layout}", lambda files: _classify_meshes(files, layout), cache_dir)
        # The cached index holds paths relative to root, so it stays valid if the dataset is moved or mounted elsewhere.
        self.entries: tuple[MeshEntry, ...] = tuple(
            MeshEntry(
                e["name"],
                self.root / e["mesh"],
                None if e["texture"] is None else self.root / e["texture"],
                e["layout"],
            )
            for e in index.entries
        )
        self.cache_path = index.cache_path
        self.from_cache = index.from_cache
        if not self.entries:
            expected = (
                "; or ".join(_EXPECTED[k] for k in ("gso", "omniobject3d", "files"))
                if layout == "auto"
                else _EXPECTED[layout]
            )
            raise ValueError(f"no meshes found under {self.root}: expected {expected}")
        self._by_name = {e.name: i for i, e in enumerate(self.entries)}
        self.texture_problems: dict[str, str] = {}

    def load(self, key: int | str, size: float, **kwargs: Any) -> Mesh:
        """Load entry `key` (index or name) as a `Mesh` with largest extent `size` (keyword args go to load_mesh).

        Texture problems are counted in `texture_problems` (name -> reason) as well as warned about."""
        entry = self[key]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TextureWarning)
            mesh = load_mesh(entry.mesh, size, texture_path=entry.texture, name=entry.name, **kwargs)
        for w in caught:
            if issubclass(w.category, TextureWarning):
                self.texture_problems[entry.name] = str(w.message)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return mesh


class ImageFolder(_Listing):
    """The images (textures or equirectangular environment maps) under a folder, listed once and cached."""

    kind = "image"

    def __init__(self, root: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.root = _existing_folder(root, "image")
        index = cached_index(self.root, "images", _classify_images, cache_dir)
        entries = [ImageEntry(e["name"], self.root / e["path"]) for e in index.entries]
        exr = [e for e in entries if e.path.suffix.lower() == ".exr"]
        note = ""
        if exr and not cv2.haveImageReader(str(exr[0].path)):
            # Decided here rather than in the cached index: the same folder may be read by machines whose OpenCV differ.
            entries = [e for e in entries if e.path.suffix.lower() != ".exr"]
            note = f" ({len(exr)} .exr files skipped: this OpenCV build cannot decode OpenEXR; convert them to .hdr)"
            if entries:
                warnings.warn(f"{self.root}:{note}", stacklevel=2)
        if not entries:
            raise ValueError(f"no images found under {self.root}: expected {', '.join(IMAGE_SUFFIXES)} files{note}")
        self.entries: tuple[ImageEntry, ...] = tuple(entries)
        self.cache_path = index.cache_path
        self.from_cache = index.from_cache
        self._by_name = {e.name: i for i, e in enumerate(self.entries)}

    def load(self, key: int | str, size: int | None = None) -> np.ndarray:
        """Entry `key` (index or name) as RGB uint8 (H, W, 3); `size` resizes its longer side."""
        return load_image(self[key].path, size)


def _existing_folder(root: str | os.PathLike[str], what: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} folder {path} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} folder {path} is not a directory")
    return path.resolve()


def _classify_meshes(files: list[str], layout: str) -> list[dict[str, Any]]:
    present = set(files)
    gso: list[dict[str, Any]] = []
    omni: list[dict[str, Any]] = []
    claimed: list[str] = []
    for f in files:
        p = PurePosixPath(f)
        if p.name == "model.obj" and p.parent.name == "meshes" and layout in ("auto", "gso"):
            model = p.parent.parent
            texture = (model / "materials" / "textures" / "texture.png").as_posix()
            gso.append(_mesh_entry(model, f, texture if texture in present else None, "gso"))
            claimed.append(model.as_posix())
        elif p.name == "Scan.obj" and p.parent.name == "Scan" and layout in ("auto", "omniobject3d"):
            obj = p.parent.parent
            textures = [(p.parent / n).as_posix() for n in ("Scan.jpg", "Scan.png", "Scan.jpeg")]
            texture = next((t for t in textures if t in present), None)
            omni.append(_mesh_entry(obj, f, texture, "omniobject3d"))
            claimed.append(obj.as_posix())
    plain: list[dict[str, Any]] = []
    if layout in ("auto", "files"):
        # In "auto", a file inside a recognised model folder (a second LOD, a collision mesh) is not its own object.
        prefixes = tuple("" if c == "." else c + "/" for c in claimed) if layout == "auto" else ()
        for f in files:
            if PurePosixPath(f).suffix.lower() in MESH_SUFFIXES and not (prefixes and f.startswith(prefixes)):
                plain.append({"name": f, "mesh": f, "texture": None, "layout": "files"})
    return sorted(gso + omni + plain, key=lambda e: e["name"])


def _mesh_entry(folder: PurePosixPath, mesh: str, texture: str | None, layout: str) -> dict[str, Any]:
    # A root that is itself one model folder has the relative path "."; name it after the mesh's layout instead.
    name = folder.as_posix() if folder.as_posix() != "." else layout
    return {"name": name, "mesh": mesh, "texture": texture, "layout": layout}


def _classify_images(files: list[str]) -> list[dict[str, Any]]:
    return [{"name": f, "path": f} for f in files if PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES]
