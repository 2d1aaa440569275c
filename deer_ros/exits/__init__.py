"""deer_ros.exits"""
