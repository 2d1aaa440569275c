"""deer_ros.train"""
