"""pip install path for deer_ros (a virtual environment without a system ROS 2).

In a colcon workspace CMakeLists.txt installs the same package (ament_cmake, because of the messages).
"""
from setuptools import find_packages, setup

setup(
    name="deer_ros",
    version="0.1.0",
    description="DeeR-VLA dynamic early-exit robot policy as a ROS 2 node, with a CALVIN bridge",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["deer_ros", "deer_ros.*"]),
    package_data={"deer_ros": ["py.typed", "calvin/assets/*.yaml", "model/assets/tiny_tokenizer/*"]},
    install_requires=[
        "numpy>=1.24",
        "pyyaml",
        "torch>=2.1",
        # open-flamingo itself must be installed with --no-deps (it pins torch==2.0.1); see README.
        "open_clip_torch>=2.16,<3",
        "einops",
        "einops-exts",
        "transformers>=4.40",
        "tokenizers",
        "scipy",
        "matplotlib",
        "scikit-optimize",
    ],
    entry_points={
        "console_scripts": [
            "deer_policy_node = deer_ros.ros.policy_node:main",
            "calvin_bridge_node = deer_ros.ros.bridge_node:main",
            "deer-ros = deer_ros.cli:main",
        ],
    },
)
