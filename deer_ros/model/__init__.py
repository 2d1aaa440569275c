"""deer_ros.model"""
