"""deer_ros.calvin: CALVIN without ROS.

dataset     CalvinSplit: validated, lazy reader of CALVIN-format splits; training_windows
replay      load_segments and replay: recorded segments stepped through a policy as the node runs them
recorder    CalvinRecorder: writes frames back as a CALVIN-format split (crash-safe, appendable)
evaluation  OpenLoopEvaluator: policy actions against recorded ones, with exit and GFLOPs statistics
protocol    LH-MTLC: eval sequences, canonical instructions, CALVIN's initial states, chains, metrics
sim         CalvinSim: the calvin_env simulator (installed from source) as the protocol's environment
"""
