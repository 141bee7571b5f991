"""Test and benchmark support for liveness: faces measured with dlib (HOG + the 5-point model from
face-recognition-models) in the C1 Face shape, and replay-attack frame sequences rendered from still photos
(a flat picture shown to the camera: moved, rotated, scaled, tilted in perspective, bent, blurred,
recompressed, with per-frame sensor noise)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import dlib
import face_recognition_models
import numpy as np

from terminal.face.types import Face

FRAME_W, FRAME_H = 640, 480
FOCAL = 600.0


class Landmarker:
    """dlib HOG detector + 5-point shape model -> C1 Face objects."""

    def __init__(self):
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        self._resnet = None

    def detect(self, image_bgr: np.ndarray, upsample: int = 1) -> Face | None:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        rects = self.detector(rgb, upsample)
        if not rects:
            return None
        r = max(rects, key=lambda d: d.area())
        return self.at_box(image_bgr, (r.left(), r.top(), r.width(), r.height()), rgb)

    def embedding(self, image_bgr: np.ndarray, face: Face) -> np.ndarray:
        """dlib's 128-D descriptor of the face (5-point alignment, as face_recognition does)."""
        if self._resnet is None:
            self._resnet = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        x, y, w, h = (int(round(v)) for v in face.box)
        shape = self.shape(rgb, dlib.rectangle(x, y, x + w, y + h))
        return np.asarray(self._resnet.compute_face_descriptor(rgb, shape), dtype=np.float32)

    def at_box(self, image_bgr, box, rgb=None) -> Face:
        """Landmarks inside a known (tracked) box."""
        if rgb is None:
            rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        x, y, w, h = (int(round(v)) for v in box)
        s = self.shape(rgb, dlib.rectangle(x, y, x + w, y + h))
        pts = np.array([(p.x, p.y) for p in s.parts()], float)
        a, b = pts[0:2].mean(0), pts[2:4].mean(0)
        left, right = (a, b) if a[0] > b[0] else (b, a)  # subject's left eye is on the image's right
        return Face(box=(x, y, w, h), score=1.0, left_eye=tuple(left), right_eye=tuple(right),
                    nose=tuple(pts[4]), landmarks=pts)


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    rx, ry, rz = (math.radians(v) for v in (rx, ry, rz))
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


@dataclass
class PhotoPose:
    """Where the flat picture is: rotations in degrees, centre offset in pixels at the frame, distance
    (as the picture's height in pixels when frontal), and a cylindrical bend."""

    rx: float = 0.0
    ry: float = 0.0
    rz: float = 0.0
    dx: float = 0.0
    dy: float = 0.0
    height_px: float = 300.0
    bend: float = 0.0        # 0 = flat; 1 = strongly curved (radius = picture width)
    bend_axis: float = 0.0   # horizontal offset of the bend axis, as a fraction of the picture width

    def blend(self, other: PhotoPose, a: float) -> PhotoPose:
        return PhotoPose(**{k: (1 - a) * getattr(self, k) + a * getattr(other, k) for k in self.__dict__})


def _bend_maps(w: int, h: int, bend: float, axis: float):
    """Remap tables showing a picture curved around a vertical axis (weak perspective)."""
    radius = w / max(bend, 1e-3)
    ax = w / 2 + axis * w
    xs = np.arange(w, dtype=np.float32) - ax
    u = radius * np.arcsin(np.clip(xs / radius, -1, 1))        # arc length for the seen x
    depth = radius * (1 - np.cos(u / radius))                  # edges recede
    shrink = 1 + depth / (FOCAL * 3)                           # farther = smaller
    map_x = np.tile((u + ax).astype(np.float32), (h, 1))
    ys = np.arange(h, dtype=np.float32)[:, None] - h / 2
    map_y = (ys * shrink[None, :] + h / 2).astype(np.float32)
    return map_x, map_y


_NOISE = np.random.default_rng(7).normal(0, 2.0, (FRAME_H + 64, FRAME_W + 64, 3)).astype(np.int16)


def add_sensor_noise(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera sensor noise (sigma 2 grey levels), different in every frame."""
    oy, ox = int(rng.integers(0, 64)), int(rng.integers(0, 64))
    noise = _NOISE[oy:oy + frame.shape[0], ox:ox + frame.shape[1]]
    return np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def picture_homography(photo_shape, pose: PhotoPose) -> np.ndarray:
    h, w = photo_shape[:2]
    z = FOCAL * h / pose.height_px        # distance in picture pixels
    rot = rotation(pose.rx, pose.ry, pose.rz)
    k = np.array([[FOCAL, 0, FRAME_W / 2 + pose.dx], [0, FOCAL, FRAME_H / 2 + pose.dy], [0, 0, 1]])
    centre = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]])
    extr = np.column_stack([rot[:, 0], rot[:, 1], [0, 0, z]])
    return k @ extr @ centre


def render(photo: np.ndarray, pose: PhotoPose, background: np.ndarray, rng: np.random.Generator,
           blur: float, jpeg_quality: int) -> np.ndarray:
    """One camera frame (BGR) showing the picture."""
    h, w = photo.shape[:2]
    pic = np.dstack([photo, np.full((h, w), 255, np.uint8)])  # alpha marks where the picture is
    if pose.bend > 0.01:
        mx, my = _bend_maps(w, h, pose.bend, pose.bend_axis)
        pic = cv2.remap(pic, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    warped = cv2.warpPerspective(pic, picture_homography(photo.shape, pose), (FRAME_W, FRAME_H),
                                 flags=cv2.INTER_LINEAR)
    frame = background.copy()
    cv2.copyTo(warped[:, :, :3], (warped[:, :, 3] > 127).astype(np.uint8), frame)
    if blur > 0.05:
        frame = cv2.GaussianBlur(frame, (0, 0), blur)
    frame = add_sensor_noise(frame, rng)
    ok, enc = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    frame = cv2.imdecode(enc, cv2.IMREAD_COLOR)

    return frame


def project(photo_shape, pose: PhotoPose, points) -> np.ndarray:
    """Where points of the picture (picture pixels) appear in the frame."""
    h, w = photo_shape[:2]
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if pose.bend > 0.01:
        radius = w / pose.bend
        ax = w / 2 + pose.bend_axis * w
        u = pts[:, 0] - ax
        x_seen = radius * np.sin(np.clip(u / radius, -np.pi / 2, np.pi / 2))
        shrink = 1 + radius * (1 - np.cos(u / radius)) / (FOCAL * 3)
        pts = np.column_stack([x_seen + ax, (pts[:, 1] - h / 2) / shrink + h / 2])
    hp = np.column_stack([pts, np.ones(len(pts))]) @ picture_homography(photo_shape, pose).T
    return hp[:, :2] / hp[:, 2:3]


def room_background(seed: int) -> np.ndarray:
    """A static, textured scene behind the picture (the office the terminal looks at)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W]
    base = 120 + 40 * np.sin(xx / 90.0) + 30 * np.cos(yy / 70.0)
    img = np.dstack([base * 0.9, base, base * 1.1]).clip(0, 255).astype(np.uint8)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, FRAME_W)), int(rng.integers(0, FRAME_H))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(img, (x0, y0), (x0 + int(rng.integers(20, 160)), y0 + int(rng.integers(20, 160))), color, -1)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


ATTACK_STYLES = ("tilt", "shear", "bend", "rotate", "translate", "closer", "combo")


def attack_target(style: str, rng: np.random.Generator, start: PhotoPose) -> PhotoPose:
    """The pose the attacker moves the picture to, for one style (signs chosen later, adaptively)."""
    t = PhotoPose(**start.__dict__)
    u = rng.uniform
    if style in ("tilt", "combo"):
        t.ry = u(20, 60)
    if style in ("shear", "combo"):
        t.ry, t.rx = u(20, 55), u(20, 55)
    if style in ("bend", "combo"):
        t.bend, t.bend_axis = u(0.6, 1.6), u(-0.35, 0.35)
    if style in ("rotate", "combo"):
        t.rz = start.rz + u(15, 40)
    if style in ("translate", "combo"):
        t.dx, t.dy = start.dx + u(-120, 120), start.dy + u(-60, 60)
    if style in ("closer", "combo"):
        t.height_px = start.height_px * u(1.3, 1.8)
    return t


def signed_variants(target: PhotoPose) -> list[PhotoPose]:
    """The sign combinations of the rotations and the bend axis an attacker can try."""
    out = []
    for sx in (1, -1):
        for sy in (1, -1):
            for sa in (1, -1):
                v = PhotoPose(**target.__dict__)
                v.rx, v.ry, v.bend_axis = sx * v.rx, sy * v.ry, sa * v.bend_axis
                out.append(v)
    return out


def _yaw(left, right, nose) -> float:
    axis = np.subtract(left, right)
    iod = float(np.hypot(*axis))
    return float(np.dot(np.subtract(nose, np.add(left, right) / 2), axis)) / iod / iod


def best_for_prompt(kind: str, photo_shape, face: Face, target: PhotoPose, start: PhotoPose) -> PhotoPose:
    """The signed variant of the attacker's target that moves the picture's nose furthest the asked way
    (an attacker who watches the screen and practises)."""
    pts = [face.left_eye, face.right_eye, face.nose]
    y0 = _yaw(*project(photo_shape, start, pts))

    def progress(v):
        y = _yaw(*project(photo_shape, v, pts)) - y0
        return y if kind == "left" else -y
    return max(signed_variants(target), key=progress)


@dataclass
class AttackOutcome:
    result: object            # LivenessResult or None (ran out of frames)
    frames: int
    style: str
    challenge: str | None
    probe_frame: np.ndarray   # a frame from the challenge phase (for identity checks)
    probe_face: Face


def simulate_replay(session, photo: np.ndarray, photo_face: Face, landmarker: Landmarker, seed: int,
                    style: str, fps: float = 10.0, max_frames: int = 70, ramp_s: float = 0.8) -> AttackOutcome:
    """Show a still picture to a liveness session as a camera would see it, following its prompts."""
    rng = np.random.default_rng(seed)
    u = rng.uniform
    background = room_background(seed)
    start = PhotoPose(rx=u(-5, 5), ry=u(-5, 5), rz=u(-8, 8), dx=u(-60, 60), dy=u(-30, 30), height_px=u(300, 400))
    blur = float(rng.choice([0.0, 0.7, 1.3, 2.0]))
    quality = int(rng.choice([35, 55, 75, 92]))
    target, ramp_at, kind = None, None, None
    probe = None
    box_corners = _box_corners(photo_face.box)
    for i in range(max_frames):
        t = i / fps
        prompt = session.prompt
        if target is None and prompt in PROMPT_KINDS:
            kind = PROMPT_KINDS[prompt]
            raw = attack_target("closer" if kind == "closer" and style != "combo" else style, rng, start)
            target = raw if kind == "closer" else best_for_prompt(kind, photo.shape, photo_face, raw, start)
            ramp_at = t
        pose = start if target is None else start.blend(target, min(1.0, (t - ramp_at) / ramp_s))
        pose = PhotoPose(**{**pose.__dict__, "dx": pose.dx + rng.normal(0, 1.0), "dy": pose.dy + rng.normal(0, 1.0)})
        frame = render(photo, pose, background, rng, blur, quality)
        corners = project(photo.shape, pose, box_corners)
        x0, y0 = corners.min(0)
        x1, y1 = corners.max(0)
        face = landmarker.at_box(frame, (x0, y0, x1 - x0, y1 - y0))
        if target is not None and probe is None and t - ramp_at >= ramp_s / 2:
            probe = (frame, face)
        result = session.feed(frame, face, t)
        if result is not None:
            break
    probe = probe or (frame, face)
    return AttackOutcome(result, i + 1, style, kind, probe[0], probe[1])


def _box_corners(box):
    x, y, w, h = box
    return [(x, y), (x + w, y), (x, y + h), (x + w, y + h)]


PROMPT_KINDS = {"Tengok ke kiri": "left", "Tengok ke kanan": "right", "Dekatkan wajah ke kamera": "closer"}


def place_face(img: np.ndarray, f: Face, background: np.ndarray, rng: np.random.Generator,
               target_iod: float = 60.0) -> tuple[np.ndarray, tuple]:
    """A camera frame with the photo's face centred at a fixed eye distance; returns (frame, face box)."""
    iod = float(np.hypot(*np.subtract(f.left_eye, f.right_eye)))
    scale = target_iod / iod
    mid = (np.add(f.left_eye, f.right_eye) / 2) * scale
    m = np.array([[scale, 0, FRAME_W / 2 - mid[0] + rng.normal(0, 1.0)],
                  [0, scale, FRAME_H / 2 - 20 - mid[1] + rng.normal(0, 1.0)]])
    frame = background.copy()
    cv2.warpAffine(img, m, (FRAME_W, FRAME_H), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
    frame = add_sensor_noise(frame, rng)
    x, y, w, h = f.box
    return frame, (x * scale + m[0, 2], y * scale + m[1, 2], w * scale, h * scale)


def show_pose_pair(session, frontal: np.ndarray, frontal_face: Face, turned: np.ndarray, turned_face: Face,
                   landmarker: Landmarker, seed: int, fps: float = 10.0, max_frames: int = 60,
                   reaction_s: float = 0.0):
    """A genuine head turn assembled from two photos of one person: the frontal photo until the prompt
    appears (plus the employee's reaction time), then the turned photo, both placed so that the faces
    coincide in size and position."""
    rng = np.random.default_rng(seed)
    background = room_background(seed)
    target_iod = 60.0
    result = None
    prompted_at = None
    for i in range(max_frames):
        t = i / fps
        if prompted_at is None and session.prompt in PROMPT_KINDS:
            prompted_at = t
        turned_now = (prompted_at is not None and t - prompted_at >= reaction_s
                      and session.prompt != "Dekatkan wajah ke kamera")
        img, f = (turned, turned_face) if turned_now else (frontal, frontal_face)
        frame, box = place_face(img, f, background, rng, target_iod)
        face = landmarker.at_box(frame, box)
        result = session.feed(frame, face, t)
        if result is not None:
            break
    return result
