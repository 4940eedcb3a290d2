"""Ray casting of the synthetic world: perspective cameras and a 32-beam spinning LiDAR.

Both sensors build all their rays at once and intersect them with the ground (the scene's Terrain: a
secant search along each ray from the plane under the sensor, GROUND_STEPS evaluations) and with
each object's oriented box parts (a vectorised slab test, restricted to the pixels of the object's
projected bounding rectangle, or to the LiDAR columns of its azimuth span). Cameras shade with a sun
(Lambert, ambient term, ground shadows of the boxes, distance haze) over a textured ground: asphalt
with lane markings, a parking strip, tiled sidewalks and grass, with two octaves of value noise.
Pixels follow OpenCV's convention (simdistill_ros.core.geometry): the ray of pixel (row i, column j)
passes through (u, v) = (j, i) of the camera matrix, so a point projecting to (u, v) lies in pixel
(round(v), round(u)). The background (sky, ground, shadows, haze) is shaded on a grid
BACKGROUND_SCALE times coarser and upsampled bilinearly (it is smooth, and this halves the cost of a
camera); objects are ray cast at full resolution. Camera ray parameters are depths along the optical
axis; LiDAR ones are ranges.
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
BACKGROUND_SCALE = 2  # sky, ground and shadows are shaded on a grid this many times coarser, then upsampled
BACKGROUND_FAR = 1e5  # depth given to sky pixels of the background (m along the optical axis)
HAZE_DISTANCE = 400.0
_GROW = np.ones((3, 3), np.uint8)  # distance haze: colour -> horizon colour by 1 - exp(-distance / HAZE_DISTANCE)
GROUND_STEPS = 4  # terrain evaluations per ray: plane start, one fixed-point and two secant steps
GROUND_TOLERANCE = 0.05  # a ray whose height residual is larger after the search misses the ground (m)
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


Rays = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, z direction components, same shape


@lru_cache(maxsize=4)
def _noise_tile(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((256, 256), dtype=np.float32)


@lru_cache(maxsize=16)
def _camera_grid(channel: str, image_size: tuple[int, int],
                 grid_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised image coordinates (1, Wg) and (Hg, 1) of the pixel centres of a grid_size (Hg, Wg)
    grid laid over the image_size camera, and the lengths (Hg, Wg) of the optical-frame rays (x, y, 1).
    OpenCV convention: full-resolution pixel (i, j) has its centre at (u, v) = (j, i); grid pixel j
    covers the full-resolution span centred at (j + 0.5) * W / Wg - 0.5 (cv2.resize's mapping)."""
    cam = next(c for c in rig.CAMERAS if c.channel == channel)
    k = rig.intrinsics(cam, image_size)
    (h, w), (hg, wg) = image_size, grid_size
    cols = (np.arange(wg, dtype=np.float64) + 0.5) * (w / wg) - 0.5
    rows = (np.arange(hg, dtype=np.float64) + 0.5) * (h / hg) - 0.5
    u = ((cols - k[0, 2]) / k[0, 0]).astype(np.float32)[None, :]
    v = ((rows - k[1, 2]) / k[1, 1]).astype(np.float32)[:, None]
    return u, v, np.sqrt(u * u + v * v + 1.0).astype(np.float32)


def sensor_pose(world: SceneWorld, t: float, translation: tuple[float, float, float],
                to_ego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global origin (3,) and sensor-to-global rotation (3, 3) of a sensor on the ego at time t."""
    ego, r_ego = world.ego_pose(t)
    return ego + r_ego @ np.asarray(translation), r_ego @ to_ego


def ground_hit(world: SceneWorld, origin: np.ndarray, dirs: Rays,
               max_t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First ground hit of rays origin + t * dirs (dirs any length, float32 arrays of one shape):
    (t, inf where a ray misses the ground before max_t; road coordinates s and lateral of the hit).

    The search starts on the plane through the ground under the sensor, takes one fixed-point step
    (exact on that plane) and two secant steps on f(t) = z(t) - ground height(t): converged to
    millimetres on the rolling road; rays grazing the horizon that do not converge count as misses."""
    road, terrain = world.road, world.terrain
    f32 = np.float32
    dz = dirs[2]
    down = dz < -1e-4
    dzs = np.where(down, dz, f32(-1.0))
    o_rel = (origin[:2] - np.array(road.origin)).astype(f32)
    oz = f32(origin[2])
    s_o, l_o = road.to_road(origin[0], origin[1])
    t0 = (f32(terrain.height(np.array(s_o), np.array(l_o))) - oz) / dzs

    def residual(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, lat = road_coords(*road.local(o_rel[0] + t * dirs[0], o_rel[1] + t * dirs[1]), road.curvature)
        return oz + t * dz - terrain.height(s, lat), s, lat

    f0, s, lat = residual(t0)
    t1 = t0 - f0 / dzs
    for _ in range(GROUND_STEPS - 2):
        f1, s, lat = residual(t1)
        denom = f1 - f0
        safe = np.abs(denom) > 1e-6
        t2 = np.where(safe, t1 - f1 * (t1 - t0) / np.where(safe, denom, f32(1.0)), t1)
        t0, f0, t1 = t1, f1, np.clip(t2, f32(1e-3), f32(4 * max_t))
    f, s, lat = residual(t1)
    hit = down & (t1 < max_t) & (np.abs(f) < GROUND_TOLERANCE)
    return np.where(hit, t1, f32(np.inf)), s, lat


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


def _slab(origin: np.ndarray, dirs: Rays, centre: np.ndarray, half: np.ndarray,
          yaw: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, Rays]:
    """Ray/box entry: (t (inf where missed), face axis 0..2, local hit point) of rays from `origin`.
    One box (centre (3,), half extents (3,), yaw) for all rays, or one per ray (centre (..., 3), ...)."""
    f32 = np.float32
    c, s = np.cos(yaw).astype(f32), np.sin(yaw).astype(f32)
    o = (np.asarray(origin) - centre).astype(f32)
    h = np.asarray(half, dtype=f32)
    ol = (c * o[..., 0] + s * o[..., 1], -s * o[..., 0] + c * o[..., 1], o[..., 2])
    dl = (c * dirs[0] + s * dirs[1], -s * dirs[0] + c * dirs[1], dirs[2])
    near, far = [], []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for ax in range(3):
            inv = f32(1.0) / dl[ax]
            ta = (-h[..., ax] - ol[ax]) * inv
            tb = (h[..., ax] - ol[ax]) * inv
            near.append(np.minimum(ta, tb))
            far.append(np.maximum(ta, tb))
    tmin = np.maximum(np.maximum(near[0], near[1]), near[2])
    tmax = np.minimum(np.minimum(far[0], far[1]), far[2])
    axis = np.where(near[0] >= tmin, 0, np.where(near[1] >= tmin, 1, 2)).astype(np.int8)
    hit = (tmax >= tmin) & (tmin > 0) & (h[..., 0] > 0)  # a zero half extent marks a missing part
    t = np.where(hit, tmin, f32(np.inf))
    th = np.where(hit, tmin, f32(0))
    local = (ol[0] + dl[0] * th, ol[1] + dl[1] * th, ol[2] + dl[2] * th)
    return t, axis, local


def _trace_object(world: SceneWorld, i: int | np.ndarray, origin: np.ndarray, dirs: Rays, pc: np.ndarray,
                  half: np.ndarray, yaw: np.ndarray) -> tuple[np.ndarray, Rays, Rays, np.ndarray]:
    """Nearest hit over an object's parts: t, world normal, local hit point (part frame), part index.
    `i` is one object index for all rays, or one per ray (an array of the rays' shape)."""
    best_t = axis = part = None
    local: Rays = dirs
    for p in range(pc.shape[1]):
        if np.all(half[i, p, 0] <= 0):
            continue
        t, ax, loc = _slab(origin, dirs, pc[i, p], half[i, p], yaw[i])
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
    c, s = np.cos(yaw[i]).astype(np.float32), np.sin(yaw[i]).astype(np.float32)
    zero = np.float32(0)
    normal = (np.where(axis == 0, c, np.where(axis == 1, -s, zero)) * sign,
              np.where(axis == 0, s, np.where(axis == 1, c, zero)) * sign,
              np.where(axis == 2, np.float32(1), zero) * sign)
    return best_t, normal, local, part


def _ground_albedo(world: SceneWorld, s: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB albedo (..., 3) and LiDAR reflectivity (...) of ground points at road coordinates (float32)."""
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


def _background(world: SceneWorld, t: float, cam: rig.CameraSpec, image_size: tuple[int, int],
                origin: np.ndarray, rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky, shaded ground with box shadows, and haze on the BACKGROUND_SCALE-coarser grid, upsampled
    bilinearly to image_size: (colour H x W x 3 float32, ground depth H x W along the optical axis,
    BACKGROUND_FAR where the sky is)."""
    h, w = image_size
    grid = (max(1, -(-h // BACKGROUND_SCALE)), max(1, -(-w // BACKGROUND_SCALE)))
    u, v, length = _camera_grid(cam.channel, image_size, grid)
    r = rot.astype(np.float32)
    dirs = tuple(r[c, 0] * u + r[c, 1] * v + r[c, 2] for c in range(3))  # global, grid shape each
    sun = np.array(world.sun, dtype=np.float32)
    up = np.clip(dirs[2] / length, 0, 1)[..., None]
    horizon = np.array(HORIZON, np.float32)
    colour = horizon + (np.array(ZENITH, np.float32) - horizon) * up
    depth = np.full(grid, BACKGROUND_FAR, dtype=np.float32)
    rows = np.nonzero((dirs[2] < -1e-4).any(1))[0]
    if len(rows):
        g0 = int(rows[0])
        tg, s_g, lat_g = ground_hit(world, origin, (dirs[0][g0:], dirs[1][g0:], dirs[2][g0:]), 600.0)
        ground = tg * length[g0:] < 600.0
        albedo, _ = _ground_albedo(world, s_g, lat_g)
        # the grid's camera matrix: full-resolution pixel u maps to grid pixel (u + 0.5) * Wg / W - 0.5
        sx, sy = grid[1] / w, grid[0] / h
        k_grid = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]]) @ rig.intrinsics(
            cam, image_size)
        shadow = _shadow_mask(world, t, origin, rot, k_grid, grid)[g0:]
        lit = np.where(shadow, np.float32(0.5), np.float32(0.5 + 0.5 * sun[2]))
        dist = np.where(ground, tg * length[g0:], np.float32(0.0))
        fog = (np.float32(1.0) - np.exp(dist / np.float32(-HAZE_DISTANCE)))[..., None]
        shaded = albedo * lit[..., None]
        shaded += (horizon - shaded) * fog
        colour[g0:] = np.where(ground[..., None], shaded, colour[g0:])
        depth[g0:] = np.where(ground, tg, depth[g0:])
    if grid == (h, w):
        return colour, depth
    size = (w, h)
    return (cv2.resize(colour, size, interpolation=cv2.INTER_LINEAR),
            cv2.resize(depth, size, interpolation=cv2.INTER_LINEAR))


def render_camera(world: SceneWorld, t: float, cam: rig.CameraSpec, image_size: tuple[int, int]) -> CameraFrame:
    """Ray-cast one camera at scene time t: the background (sky, ground, shadows, haze) on a grid
    BACKGROUND_SCALE times coarser, upsampled; every object at full resolution, within its projected
    rectangle, with its own haze."""
    h, w = image_size
    k = rig.intrinsics(cam, image_size)
    origin, rot = sensor_pose(world, t, cam.translation, rig.camera_to_ego(cam))
    colour, depth = _background(world, t, cam, image_size, origin, rot)
    u, v, length = _camera_grid(cam.channel, image_size, image_size)
    r = rot.astype(np.float32)
    sun = np.array(world.sun, dtype=np.float32)
    object_id = np.full((h, w), -1, dtype=np.int32)

    # objects, culled by distance and by their projected rectangle
    pc, half, yaw = object_parts(world, t)
    centre, _, _ = world.object_state(t)
    corners = box_corners(centre, world.size_wlh[:, [1, 0, 2]] / 2, yaw)
    cam_pts = (corners - origin) @ rot  # global -> optical frame
    n = world.num_objects
    silhouette = np.zeros(n, dtype=np.int64)
    near = np.linalg.norm(centre[:, :2] - origin[:2], axis=1) < 150.0
    depth_flat, colour_flat, id_flat = depth.ravel(), colour.reshape(-1, 3), object_id.ravel()
    length_flat = length.ravel()
    horizon = np.array(HORIZON, np.float32)
    for i in np.nonzero(near & (cam_pts[..., 2].max(1) > NEAR))[0]:
        uv = _clip_project(cam_pts[i], k)
        if uv is None:
            continue
        # the pixels whose centres (OpenCV: at integers) can lie inside the projected hull: the hull
        # rasterised (1/16 px vertices) and grown by one pixel, within its bounding rectangle
        u0, v0 = np.floor(uv.min(0)).astype(int) - 1
        u1, v1 = np.ceil(uv.max(0)).astype(int) + 2
        u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, w), min(v1, h)
        if u0 >= u1 or v0 >= v1:
            continue
        hull = cv2.convexHull(np.clip(uv - (u0, v0), -1e5, 1e5).astype(np.float32))[:, 0, :]
        mask = np.zeros((v1 - v0, u1 - u0), np.uint8)
        cv2.fillConvexPoly(mask, np.round(hull * 16).astype(np.int32), 1, cv2.LINE_8, 4)
        rows_i, cols_i = np.nonzero(cv2.dilate(mask, _GROW))
        if len(rows_i) == 0:
            continue
        us, vs = u[0, u0 + cols_i], v[v0 + rows_i, 0]
        sub = tuple(r[c, 0] * us + r[c, 1] * vs + r[c, 2] for c in range(3))
        t_obj, normal, local, part = _trace_object(world, i, origin, sub, pc, half, yaw)
        hit = np.isfinite(t_obj)
        silhouette[i] = int(np.count_nonzero(hit))
        pix = (v0 + rows_i) * w + (u0 + cols_i)
        win = hit & (t_obj < depth_flat[pix])
        if not win.any():
            continue
        pix, t_win = pix[win], t_obj[win]
        normal = tuple(c[win] for c in normal)
        diffuse = np.clip(normal[0] * sun[0] + normal[1] * sun[1] + normal[2] * sun[2], 0, None)
        col = _object_albedo(world, i, tuple(c[win] for c in local), normal[2] != 0, part[win])
        col *= (0.35 + 0.65 * diffuse)[..., None]
        haze = np.float32(1.0) - np.exp(t_win * length_flat[pix] / np.float32(-HAZE_DISTANCE))
        col += (horizon - col) * haze[..., None]
        depth_flat[pix] = t_win
        colour_flat[pix] = col
        id_flat[pix] = i

    image = cv2.convertScaleAbs(colour, alpha=255.0)  # rounds and saturates to 0..255 (colours are >= 0)
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
    floor = world.terrain.height(world.s0[keep] + world.speed[keep] * t, world.lateral[keep])
    sun = np.array(world.sun)
    # projected along the sun onto the ground plane under each object
    flat = corners - (corners[..., 2:3] - floor[:, None, None]) / sun[2] * sun
    for poly, z in zip(flat, floor):
        hull = cv2.convexHull(poly[:, :2].astype(np.float32))[:, 0, :]
        ground = np.concatenate([hull, np.full((len(hull), 1), z, np.float32)], 1).astype(np.float64)
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
    rng_t, s_g, lat_g = ground_hit(world, origin, dirs, 2 * rig.LIDAR_MAX_RANGE)
    ident = np.full(dz.shape, -1, dtype=np.int32)
    normal_dot = np.where(np.isfinite(rng_t), -dz, 0).astype(np.float32)  # |cos incidence| on the ground
    refl = np.zeros(dz.shape, dtype=np.float32)
    _, refl_ground = _ground_albedo(world, s_g, lat_g)
    refl[:] = refl_ground

    pc, half, yaw = object_parts(world, t)
    centre, _, _ = world.object_state(t)
    ann_half = world.size_wlh[:, [1, 0, 2]] / 2
    objs = np.nonzero(np.linalg.norm(centre[:, :2] - origin[:2], axis=1) < rig.LIDAR_MAX_RANGE + 15)[0]
    if len(objs):
        # each object's block of (ring, column) rays: the columns of its azimuth span and the rings
        # of its elevation span, bounded with the nearest and farthest horizontal distance of its box
        # (sensor frame, phase removed); then every (ray, object) pair of those blocks traced at once
        corners = (box_corners(centre[objs], ann_half[objs], yaw[objs]) - origin) @ rot @ pr
        az = np.arctan2(corners[..., 1], corners[..., 0])
        mid_xy = corners[..., :2].mean(1)
        ref = np.arctan2(mid_xy[:, 1], mid_xy[:, 0])
        rel = np.mod(az - ref[:, None] + math.pi, 2 * math.pi) - math.pi
        j0 = np.floor((ref + rel.min(1)) / step).astype(np.int64)
        widths = np.ceil((ref + rel.max(1)) / step).astype(np.int64) - j0 + 1
        reach = np.linalg.norm(ann_half[objs], axis=1)
        dist = np.linalg.norm(mid_xy, axis=1)
        d_near, d_far = np.maximum(dist - reach, 0.1), dist + reach
        z_lo, z_hi = corners[..., 2].min(1), corners[..., 2].max(1)
        el_lo = np.arctan2(z_lo, np.where(z_lo < 0, d_near, d_far))
        el_hi = np.arctan2(z_hi, np.where(z_hi > 0, d_near, d_far))
        rings = np.radians(rig.LIDAR_ELEVATIONS_DEG)
        r0 = np.searchsorted(rings, el_lo)
        heights = np.searchsorted(rings, el_hi, side="right") - r0
        keep = heights > 0
        objs, j0, widths, r0, heights = objs[keep], j0[keep], widths[keep], r0[keep], heights[keep]
        sizes = widths * heights
        pair_obj = np.repeat(objs, sizes)
        k = np.arange(len(pair_obj)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        w_rep = np.repeat(widths, sizes)
        col = (np.repeat(j0, sizes) + k % w_rep) % n_az
        ray = (np.repeat(r0, sizes) + k // w_rep) * n_az + col
        flat = tuple(d.ravel()[ray] for d in dirs)
        t_obj, normal, _, _ = _trace_object(world, pair_obj, origin, flat, pc, half, yaw)
        best = rng_t.ravel().copy()
        np.minimum.at(best, ray, t_obj)
        win = np.isfinite(t_obj) & (t_obj == best[ray]) & (t_obj < rng_t.ravel()[ray])
        r_win, o_win = ray[win], pair_obj[win]
        rng_t.ravel()[r_win] = t_obj[win]
        ident.ravel()[r_win] = o_win
        normal_dot.ravel()[r_win] = np.abs(sum(nc[win] * dc[win] for nc, dc in zip(normal, flat)))
        refl.ravel()[r_win] = world.reflectivity[o_win]

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
