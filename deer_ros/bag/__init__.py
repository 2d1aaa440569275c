"""rosbag2 bags for deer_ros: record the node topics, read bags as CALVIN-like splits, convert both ways, and log
runs to Rerun. Everything here needs the `bag` extra (rosbags) and, for Rerun, the `viz` extra (rerun-sdk),
imported only when used: the bridge node reaches this package (open_split) but imports rosbags only when its
dataset is a bag."""
