"""The LiDAR+camera teacher (method.md section 4): lidar.py (pillars, dense scatter, BEV encoder),
model.py (camera branch + LiDAR branch + fuser + decoder + head, the student's shapes), checkpoint.py
(its checkpoint file and the checks against a student config)."""
