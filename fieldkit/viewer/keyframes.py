"""Camera paths made in the viewer: keyframes, smooth interpolation and the JSON file.

The file is the fieldkit frame format that ``fieldkit render --path FILE.json`` reads
(``fieldkit/export/paths.py``): ``{"frames": [{"c2w": 4x4 OpenCV camera-to-world in box
coordinates, "fx", "fy", "cx", "cy", "width", "height"}, ...]}``, one frame per video frame.
The viewer adds ``"keyframes"`` (``{"c2w", "fov"}`` with the vertical fov in degrees),
``"fps"``, ``"seconds"`` and ``"loop"`` so that it can load the path back for editing; the
renderer ignores them.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fieldkit.data.cameras import Cameras
from fieldkit.errors import FieldkitError
from fieldkit.export.interp import _catmull_rom, _slerp
from fieldkit.splats.transform import quat_to_rotmat, rotmat_to_quat
from fieldkit.viewer.camera import ViewCamera, focal_from_fov


@dataclass
class Keyframe:
    """One keyframe."""

    c2w: np.ndarray
    """[4, 4] camera-to-world (box coordinates, OpenCV axes)."""
    fov: float
    """Vertical field of view in radians."""

    @classmethod
    def from_view(cls, view: ViewCamera) -> Keyframe:
        return cls(view.c2w(), view.fov)


@dataclass
class CameraPath:
    """Keyframes and how they are played."""

    keyframes: list[Keyframe] = field(default_factory=list)
    """In playing order."""
    seconds: float = 4.0
    """Duration of the video."""
    fps: int = 30
    """Frames per second."""
    loop: bool = False
    """Return from the last keyframe to the first."""
    width: int = 640
    """Video width in pixels."""
    height: int = 480
    """Video height in pixels."""

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))

    def interpolate(self, n_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(c2w [N, 4, 4], vertical fov [N] radians): Catmull-Rom positions, slerped rotations
        and linearly blended fov through every keyframe (same scheme as ``--path interp``)."""
        n = n_frames or self.num_frames
        k = len(self.keyframes)
        if k == 0:
            raise FieldkitError("the camera path has no keyframes; add some with 'add keyframe'")
        c2w = np.stack([kf.c2w for kf in self.keyframes])
        fov = np.array([kf.fov for kf in self.keyframes])
        if k == 1:
            return np.repeat(c2w, n, 0), np.repeat(fov, n)
        pos = c2w[:, :3, 3]
        quats = rotmat_to_quat(torch.as_tensor(c2w[:, :3, :3])).numpy()
        loop = self.loop and k > 2
        segments = k if loop else k - 1
        idx = (lambda i: i % k) if loop else (lambda i: min(max(i, 0), k - 1))  # noqa: E731
        out_c2w, out_fov = [], []
        for f in range(n):
            u = segments * f / (n if loop else max(1, n - 1))
            s = min(int(u), segments - 1)
            t = u - s
            m = np.eye(4)
            m[:3, 3] = _catmull_rom(pos[idx(s - 1)], pos[idx(s)], pos[idx(s + 1)],
                                    pos[idx(s + 2)], t)
            q = _slerp(quats[idx(s)], quats[idx(s + 1)], t)
            m[:3, :3] = quat_to_rotmat(torch.as_tensor(q)[None]).numpy()[0]
            out_c2w.append(m)
            out_fov.append((1 - t) * fov[idx(s)] + t * fov[idx(s + 1)])
        return np.stack(out_c2w), np.array(out_fov)

    def cameras(self, n_frames: int | None = None) -> Cameras:
        """The video's cameras (``width`` x ``height``, box coordinates)."""
        c2w, fov = self.interpolate(n_frames)
        w, h = self.width, self.height
        K = np.zeros((len(c2w), 3, 3))
        for i, f in enumerate(fov):
            fl = focal_from_fov(float(f), h)
            K[i] = [[fl, 0, w / 2], [0, fl, h / 2], [0, 0, 1]]
        n = len(c2w)
        return Cameras(c2w=torch.as_tensor(c2w, dtype=torch.float32),
                       K=torch.as_tensor(K, dtype=torch.float32),
                       width=torch.full((n,), w), height=torch.full((n,), h))

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        cams = self.cameras()
        frames = [{"c2w": cams.c2w[i].double().tolist(), "fx": float(cams.K[i, 0, 0]),
                   "fy": float(cams.K[i, 1, 1]), "cx": float(cams.K[i, 0, 2]),
                   "cy": float(cams.K[i, 1, 2]), "width": self.width, "height": self.height}
                  for i in range(len(cams))]
        return {"frames": frames,
                "keyframes": [{"c2w": kf.c2w.tolist(), "fov": math.degrees(kf.fov)}
                              for kf in self.keyframes],
                "fps": self.fps, "seconds": self.seconds, "loop": self.loop,
                "width": self.width, "height": self.height}

    def save(self, path: Path) -> Path:
        """Write the JSON file atomically."""
        path = Path(path)
        if path.suffix.lower() != ".json":
            raise FieldkitError(f"camera paths are .json files, not {path.name!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, path)
        return path

    @classmethod
    def from_json(cls, data, where: str = "camera path", nerfstudio=None) -> CameraPath:
        """From the viewer's own file (its keyframes), or any fieldkit frame list (every frame
        becomes a keyframe), or nerfstudio's camera_path.json (every camera of its path
        becomes a keyframe) when ``nerfstudio`` maps cameras from nerfstudio's frame to the
        viewer's coordinates (``Source.from_nerfstudio``)."""
        if isinstance(data, dict) and "camera_path" in data and "frames" not in data:
            if nerfstudio is None:
                raise FieldkitError(f"{where} is a nerfstudio camera path, which has no frame "
                                    "here; render it with `fieldkit render RUN --path "
                                    "FILE.json`")
            return cls._from_nerfstudio(data, where, nerfstudio)
        try:
            if isinstance(data, list):
                data = {"frames": data}
            if not isinstance(data, dict):
                raise ValueError("not a JSON object or list")
            keys = data.get("keyframes")
            path = cls(seconds=float(data.get("seconds", 4.0)), fps=int(data.get("fps", 30)),
                       loop=bool(data.get("loop", False)))
            if keys:
                path.keyframes = [Keyframe(_matrix(k["c2w"]), math.radians(float(k["fov"])))
                                  for k in keys]
            else:
                for fr in data.get("frames", []):
                    h = float(fr.get("height", 480))
                    fy = float(fr.get("fy", fr.get("fx", focal_from_fov(math.radians(50), h))))
                    path.keyframes.append(Keyframe(_matrix(fr["c2w"]),
                                                   2 * math.atan(0.5 * h / fy)))
            first = (data.get("frames") or [{}])[0]
            path.width = int(data.get("width", first.get("width", path.width)))
            path.height = int(data.get("height", first.get("height", path.height)))
        except (KeyError, TypeError, ValueError) as e:
            raise FieldkitError(f"{where} is not a fieldkit camera path ({e}); save one from "
                                "the viewer or write frames with a 'c2w' matrix") from None
        if not path.keyframes:
            raise FieldkitError(f"{where} has no frames")
        return path

    @classmethod
    def _from_nerfstudio(cls, data: dict, where: str, nerfstudio) -> CameraPath:
        from fieldkit.export.paths import nerfstudio_path

        size = cls()
        default = Cameras(torch.eye(4)[None], torch.tensor([[
            [focal_from_fov(math.radians(50), size.height), 0, size.width / 2],
            [0, focal_from_fov(math.radians(50), size.height), size.height / 2], [0, 0, 1]]]),
            torch.tensor([size.width]), torch.tensor([size.height]))
        cams = nerfstudio(nerfstudio_path(Path(where), data, default))
        h = int(cams.height[0])
        path = cls(keyframes=[Keyframe(cams.c2w[i].double().numpy(),
                                       2 * math.atan(0.5 * h / float(cams.K[i, 1, 1])))
                              for i in range(len(cams))],
                   seconds=float(data.get("seconds", len(cams) / int(data.get("fps", 30)))),
                   fps=int(data.get("fps", 30)), loop=bool(data.get("is_cycle", False)))
        path.width, path.height = int(cams.width[0]), h
        return path

    @classmethod
    def load(cls, path: Path, nerfstudio=None) -> CameraPath:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FieldkitError(f"camera path {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FieldkitError(f"camera path {path} could not be read ({e})") from None
        return cls.from_json(data, str(path), nerfstudio)


def _matrix(value) -> np.ndarray:
    m = np.asarray(value, dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4):
        raise ValueError(f"c2w has shape {m.shape}, expected 4x4")
    return m
