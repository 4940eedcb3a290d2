"""The deployable student network (method.md section 5), one idea per file:
backbone (ResNet) -> neck (FPN) -> view_transform (LSS x2) -> gcm -> fuser -> bev_decoder -> head,
composed in student.py."""
from simdistill_ros.core.model.head import split_task_output
from simdistill_ros.core.model.student import Student, StudentOutputs
from simdistill_ros.core.model.view_transform import bev_pool, bev_pool_indices

__all__ = ["Student", "StudentOutputs", "bev_pool", "bev_pool_indices", "split_task_output"]
