"""deer_ros.calvin"""
