"""deer_ros.bench"""
