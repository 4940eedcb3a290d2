"""A synthetic driving scene: a curved, undulating road, the ego vehicle and objects of the 10 classes.

Everything moves along road-parallel curves: an object is (s0, lateral, speed) in road coordinates
(arc length s along the centre line, lateral offset positive to the left) and sits at
s(t) = s0 + v t on the ground. Each lane has one speed; the ego drives in the inner right lane, whose
traffic has its own speed and keeps clear of the ego. Objects are boxes on the ground, each made of
up to two parts (a car body and cabin, a truck cab and cargo box, a pedestrian body and head, ...).
The annotation box encloses the parts with a 5 cm margin on each side and on top; its bottom is 4 cm
above the ground under its centre and the parts start 8 cm above it. Deterministic from the seed.

What keeps monocular depth from being given away (the nuScenes-like ambiguities):
- the ground is not a plane: the road undulates along its length (two sinusoids, slopes up to ~4 %,
  vertical curvature up to ~2e-3 /m), is crowned (falls 0.5-2.5 % to each side) and the sidewalks sit on a 15 cm curb;
- the ego body pitches, rolls and heaves on its suspension (about +-1 deg pitch, +-0.5 deg roll),
  on top of the road's own slope under it, so the cameras' pitch over the ground varies per frame;
- object sizes spread per class and dimension as in nuScenes (CLASS_SIZE_CV, ~10-35 %), correlated
  between dimensions;
- no class has a fixed place: every class is drawn into lanes, strips and sidewalks at random
  positions (one of each rarer class per scene, at a random slot of a random compatible strip).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# detection class -> (nuScenes category, mean size (w, l, h), shape kind)
CLASS_SPECS: dict[str, tuple[str, tuple[float, float, float], str]] = {
    "car": ("vehicle.car", (1.95, 4.62, 1.73), "car"),
    "truck": ("vehicle.truck", (2.51, 6.93, 2.84), "truck"),
    "construction_vehicle": ("vehicle.construction", (2.85, 6.37, 3.19), "truck"),
    "bus": ("vehicle.bus.rigid", (2.94, 10.50, 3.47), "block"),
    "trailer": ("vehicle.trailer", (2.90, 12.29, 3.87), "block"),
    "barrier": ("movable_object.barrier", (2.53, 0.50, 0.98), "block"),
    "motorcycle": ("vehicle.motorcycle", (0.77, 2.11, 1.47), "cycle"),
    "bicycle": ("vehicle.bicycle", (0.60, 1.70, 1.28), "cycle"),
    "pedestrian": ("human.pedestrian.adult", (0.67, 0.73, 1.77), "person"),
    "traffic_cone": ("movable_object.trafficcone", (0.41, 0.41, 1.07), "cone"),
}
CHILD_CATEGORY = "human.pedestrian.child"
# per-class coefficient of variation of (w, l, h): the spread of nuScenes' annotation sizes as we read
# it (trucks, trailers and construction vehicles vary most in length); sizes are log-normal, clipped
# at 2.5 standard deviations, with a shared factor correlating the three dimensions (SIZE_CORRELATION)
CLASS_SIZE_CV: dict[str, tuple[float, float, float]] = {
    "car": (0.09, 0.10, 0.13),
    "truck": (0.16, 0.32, 0.25),
    "construction_vehicle": (0.20, 0.35, 0.25),
    "bus": (0.06, 0.15, 0.08),
    "trailer": (0.15, 0.35, 0.15),
    "barrier": (0.25, 0.30, 0.15),
    "motorcycle": (0.20, 0.14, 0.15),
    "bicycle": (0.25, 0.15, 0.18),
    "pedestrian": (0.18, 0.22, 0.10),
    "traffic_cone": (0.30, 0.30, 0.25),
}
SIZE_CORRELATION = 0.5
# unannotated clutter (LiDAR and cameras see it, the tables do not): name -> (size (w, l, h), shape kind)
STATIC_SPECS: dict[str, tuple[tuple[float, float, float], str]] = {
    "static.building": ((14.0, 25.0, 12.0), "block"),
    "static.pole": ((0.3, 0.3, 6.5), "block"),
    "static.tree": ((3.2, 3.2, 6.0), "tree"),
}
MARGIN = 0.05  # annotation box - geometry, each side and the top (m)
BOX_BOTTOM = 0.04  # annotation box bottom above the ground (m)
PART_BOTTOM = 0.08  # geometry bottom above the ground (m)
LANES = (1.8, 5.4)  # lane centres (m); right of the centre line (negative) drives along +s
ROAD_HALF_WIDTH = 7.2  # two 3.6 m lanes each way
PARKING = 8.9  # parking strip on one side, cycle strip on the other: 7.2..10.2 m
CURB = 10.2  # sidewalk 10.2..13.8 m, grass verge beyond
WALK = (11.1, 12.6)  # walking lines on the sidewalk
SIDEWALK_OUT = 13.8
CURB_HEIGHT = 0.15  # sidewalks and verges sit this much above the road edge (m)
CURB_RAMP = 0.2  # width over which the curb rises (m): the ground stays continuous for ray casting
ANNOTATION_RANGE = 60.0  # objects within this distance of the ego may be annotated (if observed)
EGO_CLEARANCE = 3.0  # ego-lane traffic keeps at least this gap to the ego's bumpers (m)
EGO_BODY = (-1.0, 3.8)  # ego body extent along x (m) from the ego origin (rear axle)
KEYFRAME_US = 500_000  # 2 Hz key frames


@dataclass(frozen=True)
class Timeline:
    """Microsecond timestamps of one scene: key frames (LiDAR), camera firings per key frame and
    LiDAR sweeps after each key frame (none after the last). Scene time t = (us - start) * 1e-6."""

    start: int
    keys: tuple[int, ...]
    cameras: tuple[tuple[int, ...], ...]  # [key][camera]
    sweeps: tuple[tuple[int, ...], ...]  # [key] -> sweeps between this key frame and the next

    def seconds(self, us: int) -> float:
        return (us - self.start) * 1e-6


def make_timeline(seed: int, index: int, samples: int, sweeps: int, camera_offsets_us: list[int]) -> Timeline:
    rng = np.random.default_rng([seed, index, 2])
    start = 1_533_151_600_000_000 + index * 3_600_000_000 + int(rng.integers(0, 10_000_000))
    keys = [start + k * KEYFRAME_US + (int(rng.integers(-3000, 3000)) if k else 0) for k in range(samples)]
    cams = tuple(tuple(key + int(np.clip(off + rng.integers(-800, 800), 7000, 49000)) for off in camera_offsets_us)
                 for key in keys)
    sw = tuple(tuple(keys[k] + round(j * (keys[k + 1] - keys[k]) / (sweeps + 1)) for j in range(1, sweeps + 1))
               if k + 1 < samples else () for k in range(samples))
    return Timeline(start, tuple(keys), cams, sw)


@dataclass(frozen=True)
class Road:
    """A circular arc (or a straight line when curvature == 0) in the global xy plane."""

    origin: tuple[float, float]
    heading: float
    curvature: float

    def heading_at(self, s: np.ndarray) -> np.ndarray:
        return self.heading + self.curvature * np.asarray(s, dtype=np.float64)

    def point(self, s: np.ndarray, lateral: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global (x, y) of road coordinates (s, lateral)."""
        s = np.asarray(s, dtype=np.float64)
        k = self.curvature
        if k == 0.0:
            lx, ly = s, np.zeros_like(s)
        else:
            lx, ly = np.sin(k * s) / k, (1.0 - np.cos(k * s)) / k
        th = k * s
        lx = lx - np.sin(th) * lateral
        ly = ly + np.cos(th) * lateral
        c, sn = math.cos(self.heading), math.sin(self.heading)
        return self.origin[0] + c * lx - sn * ly, self.origin[1] + sn * lx + c * ly

    def to_road(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Road coordinates (s, lateral) of global points; float64 for exactness far from the origin."""
        lx, ly = self.local(np.asarray(x, np.float64) - self.origin[0], np.asarray(y, np.float64) - self.origin[1])
        return road_coords(lx, ly, self.curvature)

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global offsets (x, y) from the road origin rotated into the road's start frame."""
        c, sn = math.cos(self.heading), math.sin(self.heading)
        return c * x + sn * y, -sn * x + c * y


def road_coords(lx: np.ndarray, ly: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """(s, lateral) of points in the road's start frame; stable in float32 for any curvature."""
    if k == 0.0:
        return lx, ly
    kx, ky = k * lx, 1.0 - k * ly
    s = np.arctan2(kx, ky) / k
    lateral = (2.0 * ly - k * (lx * lx + ly * ly)) / (1.0 + np.sqrt(kx * kx + ky * ky))
    return s, lateral


@dataclass(frozen=True)
class Terrain:
    """Ground height (m, global z) over road coordinates (s, lateral): a longitudinal profile of two
    sinusoids (amplitudes, wavenumbers 2 pi / wavelength, phases), a crown falling `crown` (m/m) from
    the centre line to the curbs, and sidewalks and verges CURB_HEIGHT above the curb line."""

    amplitudes: tuple[float, float]
    wavenumbers: tuple[float, float]
    phases: tuple[float, float]
    crown: float

    def height(self, s: np.ndarray, lateral: np.ndarray) -> np.ndarray:
        """Ground height at road coordinates (any shape; float32 in, float32 out)."""
        s = np.asarray(s)
        a = np.abs(lateral)
        dt = np.float32 if s.dtype == np.float32 else np.float64
        h = np.zeros(np.broadcast(s, a).shape, dtype=dt)
        for amp, k, ph in zip(self.amplitudes, self.wavenumbers, self.phases):
            h += dt(amp) * np.sin(dt(k) * s + dt(ph))
        h -= dt(self.crown) * np.minimum(a, dt(CURB))
        h += dt(CURB_HEIGHT) * np.clip((a - dt(CURB)) * dt(1.0 / CURB_RAMP), 0.0, 1.0)
        return h

    def slope(self, s: float, lateral: float) -> tuple[float, float]:
        """(dh/ds, dh/dlateral) at one point (the curb ramp aside)."""
        ds = sum(a * k * math.cos(k * s + ph) for a, k, ph in zip(self.amplitudes, self.wavenumbers, self.phases))
        dl = -self.crown * math.copysign(1.0, lateral) if abs(lateral) < CURB else 0.0
        return float(ds), dl


@dataclass(frozen=True)
class BodyMotion:
    """The ego body on its suspension, relative to the road under it: pitch and roll (rad, REP 103
    signs: positive pitch is nose down, positive roll is left side up) and heave (m), each a constant
    plus two sinusoids of time: ((offset), (amplitude, period s, phase), ...)."""

    pitch: tuple[tuple[float, ...], ...]
    roll: tuple[tuple[float, ...], ...]
    heave: tuple[tuple[float, ...], ...]

    @staticmethod
    def _eval(terms: tuple[tuple[float, ...], ...], t: float) -> float:
        return terms[0][0] + sum(a * math.sin(2.0 * math.pi * t / period + ph) for a, period, ph in terms[1:])

    def at(self, t: float) -> tuple[float, float, float]:
        """(pitch, roll, heave) at scene time t."""
        return self._eval(self.pitch, t), self._eval(self.roll, t), self._eval(self.heave, t)


def euler_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation Rz(yaw) @ Ry(pitch) @ Rx(roll) (body to global, REP 103 axes)."""
    cy, sy, cp, sp, cr, sr = (math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll),
                              math.sin(roll))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


@dataclass(frozen=True)
class SceneWorld:
    """One scene. Per-object arrays (n objects): class name, nuScenes category, attribute, road
    coordinates and speed, yaw offset from the road direction, annotation size (w, l, h), geometry
    parts in the object frame (n, 2, 6: centre xyz, half extents; a zero half extent marks no part),
    albedo colour (n, 3) and texture (pattern kind, frequency). Clutter (buildings, poles, trees) has an
    empty category and is never annotated. Ego: lane, s0 and speed."""

    index: int
    road: Road
    sun: tuple[float, float, float]
    ground_seed: int
    classes: tuple[str, ...]
    kinds: tuple[str, ...]
    categories: tuple[str, ...]
    attributes: tuple[str, ...]
    s0: np.ndarray
    lateral: np.ndarray
    speed: np.ndarray
    yaw_offset: np.ndarray
    size_wlh: np.ndarray
    parts: np.ndarray
    color: np.ndarray
    pattern: np.ndarray
    pattern_freq: np.ndarray
    reflectivity: np.ndarray
    ego_lateral: float
    ego_s0: float
    ego_speed: float
    terrain: Terrain
    body: BodyMotion

    @property
    def num_objects(self) -> int:
        return len(self.classes)

    @property
    def annotatable(self) -> np.ndarray:
        """(n,) bool: objects of a detection class (the rest is unannotated clutter)."""
        return np.array([c in CLASS_SPECS for c in self.classes], dtype=bool)

    def ego_pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Ego (x, y, z) global and its body-to-global rotation (3 x 3) at scene time t (s): on the
        ground, along the road, tilted with the road's slope and crown under it plus the body motion."""
        s = self.ego_s0 + self.ego_speed * t
        x, y = self.road.point(np.array(s), np.array(self.ego_lateral))
        z = float(self.terrain.height(np.array(s), np.array(self.ego_lateral)))
        dh_ds, dh_dlat = self.terrain.slope(float(s), self.ego_lateral)
        pitch, roll, heave = self.body.at(t)
        # uphill (dh/ds > 0) raises the nose: negative pitch; a crown rising to the left: positive roll
        rot = euler_rotation(float(self.road.heading_at(s)), pitch - math.atan(dh_ds), roll + math.atan(dh_dlat))
        return np.array([float(x), float(y), z + heave]), rot

    def ego_yaw(self, t: float) -> float:
        """Heading of the ego body (rad) at scene time t."""
        r = self.ego_pose(t)[1]
        return math.atan2(r[1, 0], r[0, 0])

    def object_state(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Annotation box centres (n, 3), yaws (n,) and true velocities (n, 3) at scene time t. Boxes
        stand upright on the ground under their centre."""
        s = self.s0 + self.speed * t
        x, y = self.road.point(s, self.lateral)
        heading = self.road.heading_at(s)
        ground = self.terrain.height(s, self.lateral)
        z = ground + BOX_BOTTOM + self.size_wlh[:, 2] / 2
        ground_speed = self.speed * (1.0 - self.road.curvature * self.lateral)
        dh_ds = sum(a * k * np.cos(k * s + ph) for a, k, ph in zip(self.terrain.amplitudes, self.terrain.wavenumbers,
                                                                   self.terrain.phases))
        vel = np.stack([ground_speed * np.cos(heading), ground_speed * np.sin(heading), self.speed * dh_ds], 1)
        return np.stack([x, y, z], 1), heading + self.yaw_offset, vel


def _parts(kind: str, w: float, l: float, h: float, rider: bool) -> np.ndarray:
    """Geometry parts (2, 6) in the annotation-box frame (x along l, y along w, z up, origin at centre)."""
    gl, gw = l - 2 * MARGIN, w - 2 * MARGIN
    z0 = PART_BOTTOM - BOX_BOTTOM - h / 2  # geometry bottom
    gh = h - MARGIN - (PART_BOTTOM - BOX_BOTTOM)

    def part(x0: float, x1: float, wy: float, za: float, zb: float) -> list[float]:
        return [(x0 + x1) / 2 * gl, 0.0, z0 + (za + zb) / 2 * gh, (x1 - x0) / 2 * gl, wy * gw / 2, (zb - za) / 2 * gh]

    none = [0.0] * 6
    if kind == "car":
        return np.array([part(-0.5, 0.5, 1.0, 0.0, 0.55), part(-0.38, 0.18, 0.9, 0.55, 1.0)])
    if kind == "truck":
        return np.array([part(-0.5, 0.24, 1.0, 0.0, 1.0), part(0.27, 0.5, 0.95, 0.0, 0.78)])
    if kind == "person":
        return np.array([part(-0.5, 0.5, 1.0, 0.0, 0.86), part(-0.3, 0.3, 0.6, 0.86, 1.0)])
    if kind == "cycle":
        frame = part(-0.5, 0.5, 0.4, 0.0, 0.62 if rider else 1.0)
        return np.array([frame, part(-0.25, 0.2, 1.0, 0.35, 1.0) if rider else none])
    if kind == "tree":
        return np.array([part(-0.06, 0.06, 0.12, 0.0, 0.45), part(-0.5, 0.5, 1.0, 0.4, 1.0)])
    if kind == "cone":
        return np.array([part(-0.5, 0.5, 1.0, 0.0, 0.12), part(-0.25, 0.25, 0.5, 0.12, 1.0)])
    return np.array([part(-0.5, 0.5, 1.0, 0.0, 1.0), none])


def make_world(seed: int, index: int, duration: float) -> SceneWorld:
    """Scene `index` of the dataset drawn from `seed`; `duration` is the scene length in seconds."""
    rng = np.random.default_rng([seed, index, 1])
    curvature = 0.0 if rng.random() < 0.3 else float(rng.uniform(-1 / 150, 1 / 150))
    origin = (float(rng.uniform(300, 2500)), float(rng.uniform(600, 1800)))  # Boston-seaport-like
    road = Road(origin, float(rng.uniform(-math.pi, math.pi)), curvature)
    sun_el, sun_az = rng.uniform(math.radians(25), math.radians(65)), rng.uniform(-math.pi, math.pi)
    sun = (math.cos(sun_el) * math.cos(sun_az), math.cos(sun_el) * math.sin(sun_az), math.sin(sun_el))
    ego_speed = 0.0 if rng.random() < 0.1 else float(rng.uniform(3.0, 11.0))
    mid = ego_speed * duration / 2  # ego s at mid-scene (the ego starts at s = 0)
    lo, hi = -ANNOTATION_RANGE - 10.0, ego_speed * duration + ANNOTATION_RANGE + 10.0
    objs: list[dict] = []

    def size(cls: str) -> np.ndarray:
        """(w, l, h): log-normal around the class mean with CLASS_SIZE_CV, dimensions correlated."""
        mean = np.array(CLASS_SPECS[cls][1])
        sigma = np.sqrt(np.log1p(np.square(CLASS_SIZE_CV[cls])))
        z = math.sqrt(SIZE_CORRELATION) * rng.normal() + math.sqrt(1 - SIZE_CORRELATION) * rng.normal(size=3)
        return mean * np.exp(sigma * np.clip(z, -2.5, 2.5) - sigma ** 2 / 2)

    def add(cls: str, s0: float, lat: float, speed: float, yaw: float, attr: str, rider: bool = True) -> float:
        if cls in CLASS_SPECS:
            w, l, h = size(cls)
        else:
            w, l, h = np.array(STATIC_SPECS[cls][0]) * rng.uniform(0.6, 1.6, 3)
        objs.append(dict(cls=cls, s0=s0, lat=lat, speed=speed, yaw=yaw, attr=attr, rider=rider,
                         size=(float(w), float(l), float(h))))
        return float(l)

    def draw(classes: list[str], weights: list[float]) -> str:
        return str(rng.choice(classes, p=np.array(weights) / sum(weights)))

    def clear_of_ego(s0: float, length: float, speed: float) -> bool:
        """Whether an ego-lane object (centre s0 at t = 0) stays EGO_CLEARANCE away from the ego's
        bumpers for the whole scene (relative motion is linear: checking both ends suffices)."""
        gap = length / 2 + (EGO_BODY[1] - EGO_BODY[0]) / 2 + EGO_CLEARANCE
        centre = (EGO_BODY[0] + EGO_BODY[1]) / 2
        rel = [s0 + speed * t - (ego_speed * t + centre) for t in (0.0, duration)]
        return (rel[0] > gap and rel[1] > gap) or (rel[0] < -gap and rel[1] < -gap)

    def fill(lat: float, speed: float, classes: list[str], weights: list[float], attr: str, yaw: float,
             gap: tuple[float, float], forced: list[str] | None = None, ego_lane: bool = False) -> None:
        """A lane-like strip of objects at one speed with random gaps, covering the annotated window at
        all times. Each `forced` class replaces the draw at a random place that passes within 45 m of
        the ego at mid-scene. In the ego's lane, objects that would come near the ego are left out."""
        a, b = lo - max(0.0, speed) * duration, hi - min(0.0, speed) * duration
        anchor = mid - speed * duration / 2  # an object here at t=0 is beside the ego at mid-scene
        targets = sorted((anchor + float(rng.uniform(-45.0, 45.0)), c) for c in (forced or []))
        s = a + float(rng.uniform(0.0, gap[1]))
        while s < b:
            cls = targets.pop(0)[1] if targets and targets[0][0] <= s else draw(classes, weights)
            length = add(cls, 0.0, lat + rng.uniform(-0.25, 0.25), speed, yaw + float(rng.normal(0.0, 0.02)), attr)
            objs[-1]["s0"] = s + length / 2
            if ego_lane and not clear_of_ego(objs[-1]["s0"], length, speed):
                objs.pop()
            s += length + rng.uniform(*gap)

    def moving(speed: float) -> str:
        return "vehicle.moving" if abs(speed) > 0.3 else "vehicle.stopped"

    vehicles, vw = ["car", "truck", "bus", "trailer", "construction_vehicle"], [0.82, 0.1, 0.03, 0.02, 0.03]
    side = 1.0 if rng.random() < 0.5 else -1.0  # which side holds the parking strip
    work_zone = rng.random() < 0.5  # the outer oncoming lane is closed by a work zone
    # the rarer classes: one each per scene, in a random compatible strip
    strips = ["ego", "next", "oncoming"] + ([] if work_zone else ["outer"])
    forced: dict[str, list[str]] = {k: [] for k in ("ego", "next", "oncoming", "outer", "parking", "cycle", "verge")}
    for cls, where in (("bus", strips), ("truck", strips + ["parking"]), ("trailer", strips + ["parking"]),
                       ("motorcycle", ["cycle", "verge"]), ("bicycle", ["cycle", "verge"])):
        forced[str(rng.choice(where))].append(cls)
    lane_speed = 0.0 if ego_speed == 0.0 else max(0.0, ego_speed + float(rng.uniform(-2.0, 3.0)))
    fill(-LANES[0], lane_speed, vehicles, vw, moving(lane_speed), 0.0, (5.0, 25.0), forced["ego"], ego_lane=True)
    other = 0.0 if rng.random() < 0.15 else float(rng.uniform(2.0, 13.0))
    fill(-LANES[1], other, vehicles, vw, moving(other), 0.0, (5.0, 25.0), forced["next"])
    oncoming = -float(rng.uniform(3.0, 13.0))
    fill(LANES[0], oncoming, vehicles, vw, moving(oncoming), math.pi, (5.0, 30.0), forced["oncoming"])
    if not work_zone:
        oncoming = -float(rng.uniform(3.0, 13.0))
        fill(LANES[1], oncoming, vehicles, vw, moving(oncoming), math.pi, (6.0, 35.0), forced["outer"])
    fill(side * PARKING, 0.0, ["car", "truck", "trailer"], [0.88, 0.1, 0.02], "vehicle.parked",
         0.0 if rng.random() < 0.7 else math.pi, (1.5, 10.0), forced["parking"])
    cycle = float(rng.uniform(3.0, 7.0))  # the cycle strip runs with the traffic on its side
    fill(-side * PARKING, cycle * -side, ["bicycle", "motorcycle"], [0.6, 0.4], "cycle.with_rider",
         0.0 if side < 0 else math.pi, (25.0, 80.0), forced["cycle"])
    for sgn in (1.0, -1.0):  # sidewalks: a walking line each way
        walk = float(rng.uniform(0.9, 1.7))
        fill(sgn * WALK[0], walk, ["pedestrian"], [1.0], "pedestrian.moving", 0.0, (6.0, 50.0))
        fill(sgn * WALK[1], -walk, ["pedestrian"], [1.0], "pedestrian.moving", math.pi, (6.0, 50.0))
    verge = ["pedestrian" if rng.random() < 0.7 else str(rng.choice(["bicycle", "motorcycle"]))
             for _ in range(int(rng.integers(2, 6)))] + forced["verge"]
    for cls in verge:  # standing people and parked cycles on the verge
        add(cls, mid + float(rng.uniform(-50.0, 50.0)), float(rng.choice([-1, 1]) * rng.uniform(15.0, 26.0)), 0.0,
            float(rng.uniform(-math.pi, math.pi)),
            "pedestrian.standing" if cls == "pedestrian" else "cycle.without_rider", rider=False)
    # work zone: barriers along the closed lane's edge, a taper of cones before them and a construction
    # vehicle beyond; without a closed lane the same group stands on the verge, on a random side
    zs = mid + float(rng.uniform(-40.0, 40.0))
    sgn, inner = (1.0, LANES[1] - 1.5) if work_zone else (float(rng.choice([-1.0, 1.0])), SIDEWALK_OUT + 0.6)
    s = zs
    for _ in range(int(rng.integers(6, 15))):
        add("barrier", s, sgn * inner, 0.0, math.pi / 2 + float(rng.normal(0, 0.05)), "")
        objs[-1]["s0"] = s = s + objs[-1]["size"][0] / 2
        s += objs[-1]["size"][0] / 2 + float(rng.uniform(0.1, 0.8))
    for k in range(int(rng.integers(4, 11))):
        add("traffic_cone", zs - float(rng.uniform(2.0, 4.0)) * (k + 1), sgn * (inner + 0.5 * k), 0.0,
            float(rng.uniform(-3, 3)), "")
    length = add("construction_vehicle", 0.0, sgn * (inner + 1.5), 0.0, float(rng.normal(0, 0.05)),
                 "vehicle.parked")
    objs[-1]["s0"] = s + float(rng.uniform(1.0, 8.0)) + length / 2
    # clutter: street lights on the sidewalk edge, trees beyond the verge, buildings set back
    for sgn in (1.0, -1.0):
        s = lo + float(rng.uniform(0, 30))
        while s < hi:
            add("static.pole", s, sgn * (SIDEWALK_OUT - 0.3), 0.0, 0.0, "")
            s += float(rng.uniform(25, 40))
        s = lo + float(rng.uniform(0, 10))
        while s < hi:
            add("static.tree", s, sgn * float(rng.uniform(28.5, 30.0)), 0.0, float(rng.uniform(0, 3)), "")
            s += float(rng.uniform(6, 25))
        s = lo - 20.0
        while s < hi + 20.0:
            length = add("static.building", 0.0, 0.0, 0.0, float(rng.normal(0, 0.03)), "")
            objs[-1]["s0"] = s + length / 2
            objs[-1]["lat"] = sgn * (33.0 + objs[-1]["size"][0] / 2 + float(rng.uniform(0, 8)))
            s += length + float(rng.uniform(4, 20))

    n = len(objs)
    terrain, body = _terrain(rng), _body_motion(rng, ego_speed)
    classes = tuple(o["cls"] for o in objs)
    size_wlh = np.array([o["size"] for o in objs], dtype=np.float64).reshape(n, 3)
    categories = []
    for i, c in enumerate(classes):
        cat = CLASS_SPECS[c][0] if c in CLASS_SPECS else ""
        if c == "pedestrian" and rng.random() < 0.12:  # children are smaller
            size_wlh[i] *= (0.8, 0.8, 0.7)
            cat = CHILD_CATEGORY
        categories.append(cat)
    kinds = tuple(CLASS_SPECS[c][2] if c in CLASS_SPECS else STATIC_SPECS[c][1] for c in classes)
    parts = np.stack([_parts(kinds[i], *size_wlh[i], objs[i]["rider"]) for i in range(n)])
    hsv = np.stack([rng.uniform(0, 1, n), rng.uniform(0.1, 0.9, n), rng.uniform(0.25, 0.95, n)], 1)
    color = _hsv_to_rgb(hsv)
    color[np.array([c == "traffic_cone" for c in classes], dtype=bool)] = (0.95, 0.35, 0.05)
    color[np.array([c == "static.tree" for c in classes], dtype=bool)] = (0.2, 0.42, 0.15)
    color[np.array([c == "static.pole" for c in classes], dtype=bool)] = (0.5, 0.5, 0.52)
    return SceneWorld(
        index=index, road=road, sun=sun, ground_seed=int(rng.integers(2**31)), classes=classes, kinds=kinds,
        categories=tuple(categories), attributes=tuple(o["attr"] for o in objs),
        s0=np.array([o["s0"] for o in objs]), lateral=np.array([o["lat"] for o in objs]),
        speed=np.array([o["speed"] for o in objs]), yaw_offset=np.array([o["yaw"] for o in objs]),
        size_wlh=size_wlh, parts=parts, color=color, pattern=rng.integers(0, 3, n),
        pattern_freq=rng.uniform(1.0, 4.0, n), reflectivity=rng.uniform(0.15, 0.6, n),
        ego_lateral=-LANES[0], ego_s0=0.0, ego_speed=ego_speed, terrain=terrain, body=body)


def _terrain(rng: np.random.Generator) -> Terrain:
    """A gently rolling, crowned road: a long wave (80-250 m long, slopes up to 0.5-3 %) and a short one
    (25-60 m, slopes up to 0.8 %), so the vertical curvature reaches ~1e-4 to 2e-3 /m; a 0.5-2.5 % crown."""
    lam = (float(rng.uniform(80.0, 250.0)), float(rng.uniform(25.0, 60.0)))
    k = (2 * math.pi / lam[0], 2 * math.pi / lam[1])
    slopes = (float(rng.uniform(0.005, 0.03)), float(rng.uniform(0.0, 0.008)))
    return Terrain((slopes[0] / k[0], slopes[1] / k[1]), k,
                   (float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
                   float(rng.uniform(0.005, 0.025)))


def _body_motion(rng: np.random.Generator, speed: float) -> BodyMotion:
    """Suspension motion: pitch offset +-0.4 deg (load, braking) and two oscillations of 0.1-0.5 deg;
    roll offset +-0.3 deg and oscillations of 0.05-0.25 deg; heave up to 2 cm. Milder when standing."""
    d = math.radians
    m = 1.0 if speed > 0 else 0.3

    def terms(offset: float, amp: tuple[float, float], period: tuple[float, float]) -> tuple[tuple[float, ...], ...]:
        return ((float(rng.uniform(-offset, offset)),),
                *((m * float(rng.uniform(*amp)), float(rng.uniform(*period)), float(rng.uniform(0, 2 * math.pi)))
                  for _ in range(2)))

    return BodyMotion(terms(d(0.4), (d(0.1), d(0.5)), (0.6, 3.0)), terms(d(0.3), (d(0.05), d(0.25)), (0.8, 4.0)),
                      terms(0.0, (0.0, 0.01), (0.5, 2.0)))


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[:, 0] * 6.0, hsv[:, 1], hsv[:, 2]
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(x, 1) for x in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(i))]
