"""CenterHead outputs -> 3D boxes: top-K decoding, score and range filters, circle and rotated-BEV NMS.

Follows CenterPoint's test-time path (method.md section 4). Per task: the top `pre_nms_top_k`
(class, cell) heatmap entries, boxes decoded from the box code at those cells (box_coding), scores
above `score_threshold` and centres inside `post_center_range` kept, then class-agnostic NMS of the
task's kind ("circle": squared BEV centre distance < circle_radius suppresses; "rotate": rotated BEV IoU
> nms_iou suppresses, with per-class size_scale on (length, width) for NMS only), at most
`post_nms_max` kept per task; then the best `max_detections` of all tasks, sorted by score.
Pure PyTorch; runs on CPU and CUDA tensors. Greedy NMS is computed exactly as the fixed point of
"kept unless a better kept box suppresses it", one vectorised pass per iteration (no per-box loop).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from simdistill_ros.core.box_coding import decode_code
from simdistill_ros.core.classes import BOX_CODE_SIZE, TaskSpec
from simdistill_ros.core.config import GeometryConfig, PostprocessConfig
from simdistill_ros.core.rotated_iou import rotated_iou_pairs
from simdistill_ros.core.types import Detections

DecodedBoxes = tuple[Tensor, Tensor, Tensor]


def greedy_keep(suppress_nn: Tensor) -> Tensor:
    """Greedy NMS given a suppression relation over boxes sorted best first.

    suppress_nn: N x N bool; entry [i, j] (only i < j is read) says box i suppresses box j if i is kept.
    Returns N bool: box j is kept iff no kept box i < j suppresses it (the classic greedy result).
    """
    n = suppress_nn.shape[0]
    s = torch.triu(suppress_nn, diagonal=1)
    if n == 0 or not bool(s.any()):
        return torch.ones(n, dtype=torch.bool, device=suppress_nn.device)
    s_f = s.to(torch.float32)
    keep = torch.ones(n, dtype=torch.bool, device=suppress_nn.device)
    # The greedy result is the unique fixed point of keep = not (keep @ S); iterating from all-kept
    # fixes at least one more leading entry per pass, so this ends within n + 1 passes.
    for _ in range(n + 1):
        new_keep = (keep.to(torch.float32) @ s_f) == 0
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def _squared_distances(xy_n2: Tensor) -> Tensor:
    """N x N squared distances between 2D points."""
    x, y = xy_n2.t().contiguous()  # contiguous columns: much faster broadcasting on CPU
    dx = x[:, None] - x[None, :]
    dy = y[:, None] - y[None, :]
    return dx.mul_(dx).add_(dy * dy)


def circle_nms(xy_n2: Tensor, radius: float) -> Tensor:
    """N bool keep mask of greedy circle NMS on centres sorted best first: a box is dropped when a kept
    better box has squared centre distance < radius."""
    return greedy_keep(_squared_distances(xy_n2) < radius)


def rotated_nms(boxes_n5: Tensor, iou_threshold: float) -> Tensor:
    """N bool keep mask of greedy rotated-BEV NMS on boxes (x, y, length, width, yaw) sorted best first:
    a box is dropped when a kept better box overlaps it with IoU > iou_threshold."""
    n = boxes_n5.shape[0]
    r = (0.5 * (1.0 + 1e-6)) * torch.hypot(boxes_n5[:, 2], boxes_n5[:, 3])  # circumradius, with slack
    reach = r[:, None] + r[None, :]
    near = _squared_distances(boxes_n5[:, :2]) <= reach.mul_(reach)  # circumscribed circles overlap
    suppress = torch.zeros(n, n, dtype=torch.bool, device=boxes_n5.device)
    ii, jj = near.nonzero(as_tuple=True)
    upper = ii < jj
    ii, jj = ii[upper], jj[upper]
    if ii.numel():
        suppress[ii, jj] = rotated_iou_pairs(boxes_n5[ii], boxes_n5[jj]) > iou_threshold
    return greedy_keep(suppress)


def task_nms(boxes_k9: Tensor, labels_k: Tensor, task: TaskSpec) -> Tensor:
    """Keep mask of the task's class-agnostic NMS on boxes sorted best first; labels_k are the task's
    local class indices (they select size_scale for rotated NMS)."""
    if task.nms_type == "circle":
        return circle_nms(boxes_k9[:, :2], task.circle_radius)
    if task.nms_type == "rotate":
        scale = boxes_k9.new_tensor(task.size_scale)[labels_k]
        bev = torch.cat([boxes_k9[:, :2], boxes_k9[:, 3:5] * scale[:, None], boxes_k9[:, 6:7]], dim=1)
        return rotated_nms(bev, task.nms_iou)
    raise ValueError(f"unknown nms_type {task.nms_type!r}; expected circle or rotate")


def _check_heads(heads: Sequence[Tensor], tasks: Sequence[TaskSpec], geometry: GeometryConfig) -> None:
    if len(heads) != len(tasks):
        raise ValueError(f"heads: {len(heads)} tensors for {len(tasks)} tasks")
    hh, wh = geometry.head_size
    for t, (head, task) in enumerate(zip(heads, tasks)):
        want = BOX_CODE_SIZE + len(task.class_names)
        if head.ndim != 4 or head.shape[1] != want or tuple(head.shape[2:]) != (hh, wh):
            raise ValueError(f"heads[{t}]: expected B x {want} x {hh} x {wh}, got {tuple(head.shape)}")
        if head.shape[0] != heads[0].shape[0]:
            raise ValueError(f"heads[{t}]: batch {head.shape[0]} differs from heads[0]'s {heads[0].shape[0]}")


def decode(
    heads: Sequence[Tensor],
    tasks: Sequence[TaskSpec],
    geometry: GeometryConfig,
    cfg: PostprocessConfig,
) -> list[DecodedBoxes]:
    """Decode CenterHead outputs into boxes.

    heads: one tensor per task, B x (10 + n_cls_t) x Hh x Wh (rows y, columns x; channels as in
    classes.BOX_CODE_SIZE, then heatmap logits). Returns, per batch element, (boxes K x 9 (x, y,
    z_centre, length, width, height, yaw, vx, vy), scores K, labels K int64 indices into the
    concatenated class order of `tasks`), sorted by score, on the heads' device, float32.
    """
    _check_heads(heads, tasks, geometry)
    batch = heads[0].shape[0]
    device = heads[0].device
    lo = torch.tensor(cfg.post_center_range[:3], dtype=torch.float32, device=device)
    hi = torch.tensor(cfg.post_center_range[3:], dtype=torch.float32, device=device)
    per_task: list[tuple[Tensor, Tensor, Tensor]] = []  # (boxes B x K x 9, scores B x K, local labels B x K)
    for head, task in zip(heads, tasks):
        b, ch, hh, wh = head.shape
        n_cls = ch - BOX_CODE_SIZE
        flat = head.reshape(b, ch, hh * wh)
        logits = flat[:, BOX_CODE_SIZE:].reshape(b, n_cls * hh * wh)
        k = min(cfg.pre_nms_top_k, logits.shape[1])
        top_logits, top_idx = torch.topk(logits, k, dim=1, sorted=True)  # sigmoid is monotonic
        scores = torch.sigmoid(top_logits.float())
        cls = top_idx // (hh * wh)
        cell = top_idx % (hh * wh)
        code = torch.gather(flat[:, :BOX_CODE_SIZE].float(), 2, cell[:, None, :].expand(b, BOX_CODE_SIZE, k))
        cell_rc = torch.stack([cell // wh, cell % wh], dim=-1)
        boxes = decode_code(cell_rc, code.transpose(1, 2), geometry)
        per_task.append((boxes, scores, cls))

    offsets = [0]
    for task in tasks:
        offsets.append(offsets[-1] + len(task.class_names))
    results: list[DecodedBoxes] = []
    for bi in range(batch):
        all_boxes, all_scores, all_labels = [], [], []
        for t, task in enumerate(tasks):
            boxes, scores, cls = (x[bi] for x in per_task[t])
            mask = (scores > cfg.score_threshold) & ((boxes[:, :3] >= lo) & (boxes[:, :3] <= hi)).all(dim=1)
            boxes, scores, cls = boxes[mask], scores[mask], cls[mask]
            if scores.numel() > 1:
                keep = task_nms(boxes, cls, task)
                boxes, scores, cls = boxes[keep], scores[keep], cls[keep]
            n = min(cfg.post_nms_max, scores.numel())
            all_boxes.append(boxes[:n])
            all_scores.append(scores[:n])
            all_labels.append(cls[:n] + offsets[t])
        boxes = torch.cat(all_boxes)
        scores = torch.cat(all_scores)
        labels = torch.cat(all_labels)
        order = torch.argsort(scores, descending=True, stable=True)[: cfg.max_detections]
        results.append((boxes[order], scores[order], labels[order]))
    return results


def to_detections(
    decoded: DecodedBoxes,
    class_names: Sequence[str],
    stamp_ns: int = 0,
    frame_id: str = "base_link",
) -> Detections:
    """Detections (numpy, CPU) from one batch element of `decode`; class_names in the tasks' class order."""
    boxes, scores, labels = decoded
    return Detections(boxes.detach().cpu().numpy(), scores.detach().cpu().numpy(), labels.detach().cpu().numpy(),
                      tuple(class_names), stamp_ns=stamp_ns, frame_id=frame_id)
