"""Ray casting of the synthetic world: perspective cameras and a 32-beam spinning LiDAR.

Both sensors build all their rays at once and intersect them with the ground plane (z = 0) and with
each object's oriented box parts (a vectorised slab test, restricted to the pixels of the object's
projected bounding rectangle, or to the LiDAR columns of its azimuth span). Cameras shade with a sun
(Lambert, ambient term, ground shadows of the boxes, distance haze) over a textured ground: asphalt
with lane markings, a parking strip, tiled sidewalks and grass, with two octaves of value noise.
Camera rays pass through pixel centres (u + 0.5, v + 0.5): a point projecting to (u, v) lies in pixel
(floor(v), floor(u)). Camera ray parameters are depths along the optical axis; LiDAR ones are ranges.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from simdistill_ros.core.frames import yaw_rotation
from training.data.synth import rig
from training.data.synth.world import CURB, ROAD_HALF_WIDTH, SIDEWALK_OUT, SceneWorld, road_coords

NEAR = 0.1  # camera near plane (m)
HORIZON = (0.80, 0.85, 0.90)
ZENITH = (0.40, 0.55, 0.85)


@dataclass
class CameraFrame:
    """One rendered camera: RGB image, per-pixel object index (-1: ground or sky), and per object the
    number of pixels its silhouette covers ignoring other objects (`silhouette`) and actually shows."""

    image: np.ndarray
    object_id: np.ndarray
    silhouette: np.ndarray
    visible: np.ndarray


@lru_cache(maxsize=4)
def _noise_tile(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((256, 256), dtype=np.float32)


@lru_cache(maxsize=16)
def _camera_grid(channel: str, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised image coordinates of the pixel centres, (1, W) and (H, 1), and the ray lengths (H, W)
    of the optical-frame rays (x, y, 1)."""
    cam = next(c for c in rig.CAMERAS if c.channel == channel)
    k = rig.intrinsics(cam, image_size)
    h, w = image_size
    u = ((np.arange(w, dtype=np.float64) + 0.5 - k[0, 2]) / k[0, 0]).astype(np.float32)[None, :]
    v = ((np.arange(h, dtype=np.float64) + 0.5 - k[1, 2]) / k[1, 1]).astype(np.float32)[:, None]
    return u, v, np.sqrt(u * u + v * v + 1.0).astype(np.float32)


def sensor_pose(world: SceneWorld, t: float, translation: tuple[float, float, float],
                to_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global origin (3,) and sensor-to-global rotation (3, 3) of a sensor on the ego at time t."""
    ego, yaw = world.ego_pose(t)
    r_ego = yaw_rotation(yaw)
    return ego + r_ego @ np.asarray(translation), r_ego @ to_ego


def object_parts(world: SceneWorld, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Part centres (n, 2, 3) global, half extents (n, 2, 3) and object yaws (n,) at time t."""
    centre, yaw, _ = world.object_state(t)
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    loc = world.parts[:, :, :3]
    pc = np.stack([centre[:, None, 0] + c * loc[..., 0] - s * loc[..., 1],
                   centre[:, None, 1] + s * loc[..., 0] + c * loc[..., 1],
                   centre[:, None, 2] + loc[..., 2]], -1)
    return pc, world.parts[:, :, 3:], yaw


def box_corners(centre: np.ndarray, half: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(n, 8, 3) corners of yawed boxes."""
    sx = np.array([1, 1, 1, 1, -1, -1, -1, -1.0])
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1.0])
    sz = np.array([1, -1, 1, -1, 1, -1, 1, -1.0])
    lx, ly, lz = half[:, None, 0] * sx, half[:, None, 1] * sy, half[:, None, 2] * sz
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return np.stack([centre[:, None, 0] + c * lx - s * ly, centre[:, None, 1] + s * lx + c * ly,
                     centre[:, None, 2] + lz], -1)


Rays = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, z direction components, same shape


def _slab(origin: np.ndarray, dirs: Rays, centre: np.ndarray, half: np.ndarray,
          yaw: float) -> tuple[np.ndarray, np.ndarray, Rays]:
    """Ray/box entry: (t (inf where missed), face axis 0..2, local hit point) of rays from `origin`."""
    c, s = math.cos(yaw), math.sin(yaw)
    o = origin - centre
    ol = (c * o[0] + s * o[1], -s * o[0] + c * o[1], o[2])
    dl = (c * dirs[0] + s * dirs[1], -s * dirs[0] + c * dirs[1], dirs[2])
    near, far = [], []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for ax in range(3):
            inv = np.float32(1.0) / dl[ax]
            ta = (np.float32(-half[ax] - ol[ax])) * inv
            tb = (np.float32(half[ax] - ol[ax])) * inv
            near.append(np.minimum(ta, tb))
            far.append(np.maximum(ta, tb))
    tmin = np.maximum(np.maximum(near[0], near[1]), near[2])
    tmax = np.minimum(np.minimum(far[0], far[1]), far[2])
    axis = np.where(near[0] >= tmin, 0, np.where(near[1] >= tmin, 1, 2)).astype(np.int8)
    hit = (tmax >= tmin) & (tmin > 0)
    t = np.where(hit, tmin, np.float32(np.inf))
    th = np.where(hit, tmin, np.float32(0))
    local = (np.float32(ol[0]) + dl[0] * th, np.float32(ol[1]) + dl[1] * th, np.float32(ol[2]) + dl[2] * th)
    return t, axis, local


def _trace_object(world: SceneWorld, i: int, origin: np.ndarray, dirs: Rays, pc: np.ndarray,
                  half: np.ndarray, yaw: float) -> tuple[np.ndarray, Rays, Rays, np.ndarray]:
    """Nearest hit over an object's parts: t, world normal, local hit point (part frame), part index."""
    best_t = axis = part = None
    local: Rays = dirs
    for p in range(pc.shape[1]):
        if half[i, p, 0] <= 0:
            continue
        t, ax, loc = _slab(origin, dirs, pc[i, p], half[i, p], yaw)
        if best_t is None:
            best_t, axis, local, part = t, ax, loc, np.zeros(t.shape, np.int8)
            continue
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        axis = np.where(closer, ax, axis)
        local = tuple(np.where(closer, a, b) for a, b in zip(loc, local))  # type: ignore[assignment]
        part = np.where(closer, np.int8(p), part)
    assert best_t is not None and axis is not None and part is not None
    # outward normal of the entry face, in the world frame
    sign = np.sign(np.where(axis == 0, local[0], np.where(axis == 1, local[1], local[2])))
    c, s = np.float32(math.cos(yaw)), np.float32(math.sin(yaw))
    zero = np.float32(0)
    normal = (np.where(axis == 0, c, np.where(axis == 1, -s, zero)) * sign,
              np.where(axis == 0, s, np.where(axis == 1, c, zero)) * sign,
              np.where(axis == 2, np.float32(1), zero) * sign)
    return best_t, normal, local, part


def _ground_albedo(world: SceneWorld, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB albedo (..., 3) and LiDAR reflectivity (...) of ground points given as global offsets from
    the road origin (float32)."""
    lx, ly = world.road.local(x, y)
    s, lat = road_coords(lx, ly, world.road.curvature)
    a = np.abs(lat)
    tile = _noise_tile(world.ground_seed)
    fine = tile[np.floor(s * 6.0).astype(np.int64) & 255, np.floor(lat * 6.0).astype(np.int64) & 255]
    coarse = tile[(np.floor(s * 0.6).astype(np.int64) + 101) & 255, (np.floor(lat * 0.6).astype(np.int64) + 37) & 255]
    shade = (np.float32(0.8) + np.float32(0.12) * fine + np.float32(0.16) * coarse)[..., None]
    # bands across the road: centre gap, double yellow, asphalt, dashed divider, asphalt, edge line,
    # parking/cycle strip, curb, sidewalk, grass
    bands = np.array([0.08, 0.22, 3.52, 3.68, ROAD_HALF_WIDTH - 0.25, ROAD_HALF_WIDTH - 0.05, CURB,
                      CURB + 0.25, SIDEWALK_OUT], dtype=np.float32)
    region = np.searchsorted(bands, a)
    material = np.array([2, 0, 2, 1, 2, 1, 3, 4, 5, 6], dtype=np.int8)[region]
    material[(region == 3) & (np.mod(s, np.float32(12.0)) >= 4.0)] = 2  # gaps of the dashed line
    colours = np.array([(0.85, 0.7, 0.15), (0.9, 0.9, 0.88), (0.3, 0.3, 0.32), (0.36, 0.35, 0.35),
                        (0.75, 0.75, 0.72), (0.6, 0.58, 0.55), (0.28, 0.45, 0.17)], dtype=np.float32)
    tiles = (np.floor(s / 1.5).astype(np.int64) + np.floor(lat / 1.5).astype(np.int64)) & 1
    shade = shade - np.float32(0.08) * ((tiles == 1) & (material == 5))[..., None]
    albedo = colours[material] * shade
    refl = np.array([0.45, 0.5, 0.07, 0.08, 0.25, 0.2, 0.12], dtype=np.float32)[material] * (0.8 + 0.4 * fine)
    return albedo, refl


def _object_albedo(world: SceneWorld, i: int, local: Rays, top: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Object colour (..., 3) with its texture (stripes or checks) and dark glass on a car's cabin sides."""
    col = world.color[i].astype(np.float32)
    f = world.pattern_freq[i]
    if world.pattern[i] == 1:
        tex = 1.0 - 0.25 * (np.floor(local[2] * f * 2.0).astype(np.int64) & 1)
    elif world.pattern[i] == 2:
        tex = 1.0 - 0.2 * ((np.floor(local[0] * f) + np.floor(local[1] * f)
                            + np.floor(local[2] * f)).astype(np.int64) & 1)
    else:
        tex = np.ones(top.shape, dtype=np.float32)
    albedo = col * tex[..., None].astype(np.float32)
    if world.kinds[i] == "car":
        glass = (part == 1) & ~top
        albedo = np.where(glass[..., None], np.float32(0.08) + np.float32(0.2) * albedo, albedo)
    return albedo


def _clip_project(points: np.ndarray, k: np.ndarray) -> np.ndarray | None:
    """Pixel coordinates (m, 2) of a convex point set in the optical frame clipped to z >= NEAR (all
    segments between the points are considered, which covers a box's edges and a polygon's sides)."""
    front = points[points[:, 2] >= NEAR]
    behind = points[points[:, 2] < NEAR]
    if len(front) == 0:
        return None
    if len(behind):
        a, b = front[:, None, :], behind[None, :, :]
        w = (a[..., 2] - NEAR) / (a[..., 2] - b[..., 2])
        front = np.concatenate([front, (a + (b - a) * w[..., None]).reshape(-1, 3)])
    return np.stack([k[0, 0] * front[:, 0] / front[:, 2] + k[0, 2], k[1, 1] * front[:, 1] / front[:, 2] + k[1, 2]], 1)


def render_camera(world: SceneWorld, t: float, cam: rig.CameraSpec, image_size: tuple[int, int]) -> CameraFrame:
    """Ray-cast one camera at scene time t."""
    h, w = image_size
    k = rig.intrinsics(cam, image_size)
    origin, rot = sensor_pose(world, t, cam.translation, rig.camera_to_ego(cam))
    u, v, length = _camera_grid(cam.channel, image_size)
    r = rot.astype(np.float32)
    dirs = tuple(r[c, 0] * u + r[c, 1] * v + r[c, 2] for c in range(3))  # global, (H, W) each
    sun = np.array(world.sun, dtype=np.float32)

    # sky everywhere, then the ground on rows that see it
    up = np.clip(dirs[2] / length, 0, 1)[..., None]
    colour = np.array(HORIZON, np.float32) * (1 - up) + np.array(ZENITH, np.float32) * up
    depth = np.full((h, w), np.inf, dtype=np.float32)
    rows = np.nonzero((dirs[2] < -1e-4).any(1))[0]
    if len(rows):
        g0 = int(rows[0])
        dz = dirs[2][g0:]
        ground = dz < -1e-4
        tg = np.float32(-origin[2]) / np.where(ground, dz, np.float32(-1))
        ground &= tg * length[g0:] < 600.0
        tg = np.where(ground, tg, np.float32(0))
        o_rel = (origin[:2] - np.array(world.road.origin)).astype(np.float32)
        albedo, _ = _ground_albedo(world, o_rel[0] + tg * dirs[0][g0:], o_rel[1] + tg * dirs[1][g0:])
        shadow = _shadow_mask(world, t, origin, rot, k, image_size)[g0:]
        lit = np.where(shadow, np.float32(0.5), np.float32(0.5 + 0.5 * sun[2]))
        colour[g0:] = np.where(ground[..., None], albedo * lit[..., None], colour[g0:])
        depth[g0:] = np.where(ground, tg, np.float32(np.inf))
    object_id = np.full((h, w), -1, dtype=np.int32)

    # objects, culled by distance and by their projected rectangle
    pc, half, yaw = object_parts(world, t)
    centre, _, _ = world.object_state(t)
    corners = box_corners(centre, world.size_wlh[:, [1, 0, 2]] / 2, yaw)
    cam_pts = (corners - origin) @ rot  # global -> optical frame
    n = world.num_objects
    silhouette = np.zeros(n, dtype=np.int64)
    near = np.linalg.norm(centre[:, :2] - origin[:2], axis=1) < 150.0
    for i in np.nonzero(near & (cam_pts[..., 2].max(1) > NEAR))[0]:
        uv = _clip_project(cam_pts[i], k)
        if uv is None:
            continue
        u0, v0 = np.floor(uv.min(0)).astype(int)
        u1, v1 = np.ceil(uv.max(0)).astype(int) + 1
        u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, w), min(v1, h)
        if u0 >= u1 or v0 >= v1:
            continue
        sub = tuple(d[v0:v1, u0:u1] for d in dirs)
        t_obj, normal, local, part = _trace_object(world, i, origin, sub, pc, half, float(yaw[i]))
        hit = np.isfinite(t_obj)
        silhouette[i] = int(np.count_nonzero(hit))
        win = hit & (t_obj < depth[v0:v1, u0:u1])
        if not win.any():
            continue
        diffuse = np.clip(normal[0] * sun[0] + normal[1] * sun[1] + normal[2] * sun[2], 0, None)
        col = _object_albedo(world, i, local, normal[2] != 0, part) * (0.35 + 0.65 * diffuse)[..., None]
        depth[v0:v1, u0:u1][win] = t_obj[win]
        colour[v0:v1, u0:u1][win] = col[win]
        object_id[v0:v1, u0:u1][win] = i

    # distance haze
    fog = np.float32(1.0) - np.exp(np.where(np.isfinite(depth), depth * length, np.float32(0)) / np.float32(-400.0))
    colour += (np.array(HORIZON, np.float32) - colour) * fog[..., None]
    image = (np.clip(colour, 0, 1) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
    visible = np.bincount(object_id[object_id >= 0].ravel(), minlength=n)
    return CameraFrame(image, object_id, silhouette, visible)


def _shadow_mask(world: SceneWorld, t: float, origin: np.ndarray, rot: np.ndarray, k: np.ndarray,
                 image_size: tuple[int, int]) -> np.ndarray:
    """Pixels whose ground point lies in a box's shadow (the box hull projected along the sun)."""
    h, w = image_size
    mask = np.zeros((h, w), dtype=np.uint8)
    centre, yaw, _ = world.object_state(t)
    keep = np.linalg.norm(centre[:, :2] - origin[:2], axis=1) < 80.0
    if not keep.any():
        return mask.astype(bool)
    corners = box_corners(centre[keep], world.size_wlh[keep][:, [1, 0, 2]] / 2 * 0.95, yaw[keep])
    sun = np.array(world.sun)
    flat = corners - corners[..., 2:3] / sun[2] * sun  # projected onto z = 0 along the sun
    for poly in flat:
        hull = cv2.convexHull(poly[:, :2].astype(np.float32))[:, 0, :]
        ground = np.concatenate([hull, np.zeros((len(hull), 1), np.float32)], 1).astype(np.float64)
        uv = _clip_polygon(((ground - origin) @ rot), k)
        if uv is not None:
            cv2.fillPoly(mask, [np.round(np.clip(uv, -1e5, 1e5) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


def _clip_polygon(poly: np.ndarray, k: np.ndarray) -> np.ndarray | None:
    """Clip a polygon (optical frame) to z >= NEAR (Sutherland-Hodgman) and project it."""
    out = []
    for a, b in zip(poly, np.roll(poly, -1, 0)):
        if a[2] >= NEAR:
            out.append(a)
        if (a[2] >= NEAR) != (b[2] >= NEAR):
            out.append(a + (b - a) * (a[2] - NEAR) / (a[2] - b[2]))
    if len(out) < 3:
        return None
    p = np.array(out)
    return np.stack([k[0, 0] * p[:, 0] / p[:, 2] + k[0, 2], k[1, 1] * p[:, 1] / p[:, 2] + k[1, 2]], 1)


@lru_cache(maxsize=2)
def _lidar_rays() -> np.ndarray:
    el = np.radians(rig.LIDAR_ELEVATIONS_DEG)
    az = np.arange(rig.LIDAR_AZIMUTHS) * (2 * math.pi / rig.LIDAR_AZIMUTHS)
    return np.stack([np.cos(el)[:, None] * np.cos(az)[None], np.cos(el)[:, None] * np.sin(az)[None],
                     np.broadcast_to(np.sin(el)[:, None], (len(el), len(az)))], -1)


def render_lidar(world: SceneWorld, t: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One LiDAR sweep at scene time t: points (N, 5) float32 in the LIDAR_TOP frame (x, y, z,
    intensity 0..255, ring) and the object index of each point (-1: ground)."""
    origin, rot = sensor_pose(world, t, rig.LIDAR_TRANSLATION, rig.lidar_to_ego())
    n_az = rig.LIDAR_AZIMUTHS
    step = 2 * math.pi / n_az
    phase = float(rng.uniform(0, step))
    pr = yaw_rotation(phase)
    local = _lidar_rays() @ pr.T  # sensor frame (32, A, 3)
    dirs3 = (local @ rot.T).astype(np.float32)
    dirs = (dirs3[..., 0], dirs3[..., 1], dirs3[..., 2])
    dz = dirs[2]
    down = dz < -1e-4
    rng_t = np.where(down, -origin[2] / np.where(down, dz, -1), np.inf).astype(np.float32)
    ident = np.full(dz.shape, -1, dtype=np.int32)
    normal_dot = np.where(down, -dz, 0).astype(np.float32)  # |cos incidence| on the ground
    refl = np.zeros(dz.shape, dtype=np.float32)
    o_rel = (origin[:2] - np.array(world.road.origin)).astype(np.float32)
    tg = np.where(down, rng_t, 0)
    _, refl_ground = _ground_albedo(world, o_rel[0] + tg * dirs[0], o_rel[1] + tg * dirs[1])
    refl[:] = refl_ground

    pc, half, yaw = object_parts(world, t)
    centre, _, _ = world.object_state(t)
    ann_half = world.size_wlh[:, [1, 0, 2]] / 2
    corners = (box_corners(centre, ann_half, yaw) - origin) @ rot @ pr  # sensor frame, phase removed
    near = np.linalg.norm(centre[:, :2] - origin[:2], axis=1) < rig.LIDAR_MAX_RANGE + 15
    for i in np.nonzero(near)[0]:
        az = np.arctan2(corners[i, :, 1], corners[i, :, 0])
        ref = math.atan2(corners[i, :, 1].mean(), corners[i, :, 0].mean())
        rel = np.mod(az - ref + math.pi, 2 * math.pi) - math.pi
        j0, j1 = math.floor((ref + rel.min()) / step), math.ceil((ref + rel.max()) / step)
        cols = np.arange(j0, j1 + 1) % n_az
        sub = tuple(d[:, cols] for d in dirs)
        t_obj, normal, _, _ = _trace_object(world, i, origin, sub, pc, half, float(yaw[i]))
        sub_t = rng_t[:, cols]
        win = t_obj < sub_t
        if not win.any():
            continue
        rows, cc = np.nonzero(win)
        rng_t[rows, cols[cc]] = t_obj[rows, cc]
        ident[rows, cols[cc]] = i
        normal_dot[rows, cols[cc]] = np.abs(sum(nc[rows, cc] * dc[rows, cc] for nc, dc in zip(normal, sub)))
        refl[rows, cols[cc]] = world.reflectivity[i]

    keep = rng_t < rig.LIDAR_MAX_RANGE
    dist = np.where(keep, rng_t, 0)
    drop = rng.random(dist.shape) < 0.03 + 0.1 * (dist / rig.LIDAR_MAX_RANGE) ** 2
    keep &= ~drop
    noise = np.clip(rng.normal(0.0, 0.012, dist.shape), -0.03, 0.03)
    r = (dist + noise)[keep]
    pts = local[keep] * r[:, None]
    intensity = np.clip(255.0 * refl[keep] * (0.3 + 0.7 * normal_dot[keep]) + rng.normal(0, 1.5, r.shape), 0, 255)
    ring = np.broadcast_to(np.arange(len(rig.LIDAR_ELEVATIONS_DEG))[:, None], dist.shape)[keep]
    out = np.concatenate([pts, intensity[:, None], ring[:, None]], 1).astype(np.float32)
    return out, ident[keep]
