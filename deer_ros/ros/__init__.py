"""deer_ros.ros"""
