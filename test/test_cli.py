"""`deer-ros`: every sub-command prints its help, and one option name means one thing across sub-commands."""
import subprocess

import pytest

from deer_ros.cli import COMMANDS, main
from deer_ros.ros.launcher import executable

SUBCOMMANDS = [[name] for name in COMMANDS] + [["train", "curve"]]


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_prints_its_help_and_exits_0(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: deer-ros {' '.join(command)}")
    assert "--preset" not in out and "--threads" not in out  # the old spellings are not advertised


def test_the_top_level_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


@pytest.mark.parametrize("command", [["train"], ["bench"], ["convert"], ["flops"], ["calibrate"], ["demo"]],
                         ids=" ".join)
def test_the_model_preset_is_model_everywhere(command, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    assert "--model" in capsys.readouterr().out


def test_old_spellings_still_work_and_say_what_to_use(capsys):
    from deer_ros.bench.cli import parse_options
    from deer_ros.train.cli import build_parser

    args = build_parser().parse_args(["--preset", "of3b", "--threads", "2", "--out", "m.pt"])
    assert (args.model, args.cpu_threads) == ("of3b", 2)
    opts, _, _ = parse_options(["--preset", "tiny", "--threads", "1", "--skip-ros"])
    assert (opts.presets, opts.threads) == (["tiny"], 1)
    err = capsys.readouterr().err
    assert "--preset is deprecated, use --model" in err and "--threads is deprecated, use --cpu-threads" in err


def test_the_new_names_win_over_nothing_given():
    from deer_ros.train.cli import build_parser

    args = build_parser().parse_args(["--out", "m.pt"])
    assert (args.model, args.cpu_threads) == ("tiny", 0)  # the alias adds no default of its own


@pytest.mark.ros
@pytest.mark.parametrize("exe,parameter", [("deer_policy_node", "flops_budget"),
                                           ("calvin_bridge_node", "lockstep")])
def test_node_executables_print_help_and_start_nothing(exe, parameter):
    done = subprocess.run([executable(exe), "--help"], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {exe}")
    assert f"  {parameter} (" in done.stdout
    # a started node logs through rcutils ([INFO] [...]); help exits before rclpy.init
    assert "[INFO]" not in done.stdout + done.stderr and "Traceback" not in done.stderr
