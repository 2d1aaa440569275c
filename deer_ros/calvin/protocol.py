"""CALVIN's long-horizon multi-task language control (LH-MTLC) protocol, independent of the simulator.

Per chain (CALVIN evaluation/evaluate_policy.py; DeeR eval_utils.py): the scene is reset once to the chain's
initial state, then its 5 subtasks run in order without a reset. Per subtask the policy's history is cleared,
it gets the task's canonical instruction, and it has up to 360 steps; the subtask succeeds as soon as CALVIN's
task oracle sees the task done relative to the subtask's first frame. The chain stops at the first failure.
Metrics: success rate for i = 1..5 (fraction of chains with at least i consecutive successes) and the average
successful length (mean number of completed subtasks, 0-5).

The simulator side is the `SubtaskEnv` protocol (implemented by `deer_ros.calvin.sim.CalvinSim`); the policy
side is `ChainPolicy` (a model in-process, or the ROS bridge waiting for the policy node's action).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import yaml

if TYPE_CHECKING:
    from deer_ros.calvin.recorder import CalvinRecorder

SUBTASK_STEPS = 360  # CALVIN evaluate_policy EP_LEN: steps allowed per subtask
CHAIN_LENGTH = 5     # subtasks per chain
ASSETS = Path(__file__).resolve().parent / "assets"
CANONICAL_INSTRUCTIONS_FILE = ASSETS / "validation_instructions.yaml"
VALIDATION_YAML = Path("calvin_models") / "conf" / "annotations" / "new_playtable_validation.yaml"

# The initial-condition vocabulary of CALVIN's multistep_sequences.get_sequences, in its key and value order
# (the order fixes the order of the initial states, hence their seeds: deer_ros.calvin.sequences).
INITIAL_STATE_VALUES: dict[str, tuple] = {
    "led": (0, 1),
    "lightbulb": (0, 1),
    "slider": ("right", "left"),
    "drawer": ("closed", "open"),
    "red_block": ("table", "slider_right", "slider_left"),
    "blue_block": ("table", "slider_right", "slider_left"),
    "pink_block": ("table", "slider_right", "slider_left"),
    "grasped": (0,),
}

# Scene constants of CALVIN evaluation/utils.py get_env_state_for_initial_condition (facts of the benchmark).
NEUTRAL_ROBOT_OBS = np.array([0.02586889, -0.2313129, 0.5712808, 3.09045411, -0.02908596, 1.50013585,
                              0.07999963, -1.21779124, 1.03987629, 2.11978254, -2.34205014, -0.87015899,
                              1.64119093, 0.55344928, 1.0])
BLOCK_SLIDER_LEFT = np.array([-2.40851662e-01, 9.24044687e-02, 4.60990009e-01])
BLOCK_SLIDER_RIGHT = np.array([7.03416330e-02, 9.24044687e-02, 4.60990009e-01])
BLOCK_TABLE = (np.array([5.00000896e-02, -1.20000177e-01, 4.59990009e-01]),
               np.array([2.29995412e-01, -1.19995140e-01, 4.59990010e-01]))
BLOCK_YAW_RANGE = (np.pi / 2 - np.pi / 8, np.pi / 2 + np.pi / 8)
SLIDER_LEFT_POS, DRAWER_OPEN_POS, SWITCH_ON_POS = 0.28, 0.22, 0.088


class ProtocolError(ValueError):
    """Bad protocol input (sequence file, instruction table, task name); the message says what to fix."""


# ---------------------------------------------------------------------------------------------- instructions
def _read_instruction_yaml(path: Path) -> dict[str, str]:
    try:
        table = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProtocolError(f"{path}: cannot read the instruction table ({exc})") from exc
    if not isinstance(table, dict) or not table:
        raise ProtocolError(f"{path}: expected a mapping task -> instruction (or list of instructions)")
    out = {}
    for task, value in table.items():
        sentence = value[0] if isinstance(value, list) and value else value
        if not isinstance(sentence, str) or not sentence.strip():
            raise ProtocolError(f"{path}: task {task!r} has no instruction string ({value!r})")
        out[str(task)] = sentence.strip()
    return out


def canonical_instructions() -> dict[str, str]:
    """task id -> the benchmark's evaluation instruction (the first sentence of each task in CALVIN's
    new_playtable_validation.yaml), from the packaged table (assets/validation_instructions.yaml)."""
    try:
        families = yaml.safe_load(CANONICAL_INSTRUCTIONS_FILE.read_text())["instructions"]
        return {str(task): str(text) for tasks in families.values() for task, text in tasks.items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"{CANONICAL_INSTRUCTIONS_FILE}: the packaged instruction table is damaged ({exc}); "
                            "reinstall deer_ros") from exc


def load_validation_instructions(calvin_path: str | os.PathLike) -> dict[str, str]:
    """task id -> first sentence of CALVIN's new_playtable_validation.yaml, from a calvin checkout (its root or
    calvin_models/) or from the yaml file itself."""
    path = Path(calvin_path).expanduser()
    for candidate in (path, path / VALIDATION_YAML, path / VALIDATION_YAML.relative_to("calvin_models")):
        if candidate.is_file():
            return _read_instruction_yaml(candidate)
    raise ProtocolError(f"{path}: no new_playtable_validation.yaml there; give a calvin checkout "
                        f"(github.com/mees/calvin) or the file {VALIDATION_YAML} itself")


def instruction_for(task: str, instructions: Mapping[str, str]) -> str:
    """The instruction of `task`, or a ProtocolError; an instruction is never made up."""
    try:
        return instructions[task]
    except KeyError:
        raise ProtocolError(
            f"no canonical instruction for task {task!r} (known: {', '.join(sorted(instructions))}). Load CALVIN's "
            "own table with load_validation_instructions(<calvin checkout>).") from None


# ---------------------------------------------------------------------------------------------- sequences
@dataclass(frozen=True)
class EvalSequence:
    initial_state: dict[str, Any]  # CALVIN initial condition, in the file's key order (the scene seed uses it)
    tasks: tuple[str, ...]         # CHAIN_LENGTH task ids


def load_eval_sequences(path: str | os.PathLike, limit: int | None = None,
                        known_tasks: Sequence[str] | None = None) -> list[EvalSequence]:
    """Read an eval_sequences.json (a list of [initial_state, [5 task ids]], as shipped by DeeR/RoboFlamingo).

    `limit` keeps the first N chains (DeeR evaluates the first 224). Task ids are checked against `known_tasks`
    (default: the tasks of the canonical instruction table).
    """
    path = Path(path).expanduser()
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{path}: cannot read the sequence file ({exc})") from exc
    if not isinstance(entries, list) or not entries:
        raise ProtocolError(f"{path}: expected a non-empty JSON list of [initial_state, [tasks]]")
    known = set(known_tasks if known_tasks is not None else canonical_instructions())
    sequences = []
    for i, entry in enumerate(entries[:limit]):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], dict)
                and isinstance(entry[1], list)):
            raise ProtocolError(f"{path}: entry {i} is not [initial_state, [tasks]]: {str(entry)[:120]}")
        state, tasks = entry
        _check_initial_state(state, f"{path}: entry {i}")
        if len(tasks) != CHAIN_LENGTH or not all(isinstance(t, str) for t in tasks):
            raise ProtocolError(f"{path}: entry {i} must list {CHAIN_LENGTH} task ids, found {tasks!r}")
        unknown = [t for t in tasks if t not in known]
        if unknown:
            raise ProtocolError(f"{path}: entry {i} names unknown task(s) {unknown}")
        sequences.append(EvalSequence(dict(state), tuple(tasks)))
    return sequences


def _check_initial_state(state: Mapping[str, Any], where: str) -> None:
    if set(state) != set(INITIAL_STATE_VALUES):
        raise ProtocolError(f"{where}: initial state keys {sorted(state)} != {sorted(INITIAL_STATE_VALUES)}")
    for key, allowed in INITIAL_STATE_VALUES.items():
        if state[key] not in allowed:
            raise ProtocolError(f"{where}: initial state {key}={state[key]!r}, expected one of {allowed}")


# ---------------------------------------------------------------------------------------------- initial state
def fnv1_32(data: bytes, hval: int = 0) -> int:
    """32-bit FNV-1 hash (multiply, then xor) starting from `hval`; pyhash.fnv1_32() starts from 0."""
    for byte in data:
        hval = ((hval * 0x01000193) & 0xFFFFFFFF) ^ byte
    return hval


def initial_state_seed(initial_state: Mapping[str, Any]) -> int:
    """CALVIN's per-condition seed: pyhash.fnv1_32()(str(initial_condition.values())). pyhash hashes a str as
    its UTF-16-LE bytes (without BOM) on CPython 3 builds with a 4-byte wchar_t (Linux, macOS)."""
    return fnv1_32(str(initial_state.values()).encode("utf-16-le"))


def initial_state_to_obs(initial_state: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(robot_obs (15,), scene_obs (24,)) for a chain's initial condition, as CALVIN's
    get_env_state_for_initial_condition computes it: neutral arm; slider, drawer, switch and lights from the
    condition; block places from a seeded shuffle of the two table spots; block yaw uniform in pi/2 +- pi/8."""
    _check_initial_state(initial_state, "initial state")
    # CALVIN seeds numpy's global legacy generator; a RandomState with the same seed gives the same stream.
    rng = np.random.RandomState(initial_state_seed(initial_state))
    table = list(BLOCK_TABLE)
    rng.shuffle(table)
    scene = np.zeros(24)
    if initial_state["slider"] == "left":
        scene[0] = SLIDER_LEFT_POS
    if initial_state["drawer"] == "open":
        scene[1] = DRAWER_OPEN_POS
    if initial_state["lightbulb"] == 1:
        scene[3] = SWITCH_ON_POS
    scene[4] = initial_state["lightbulb"]
    scene[5] = initial_state["led"]
    slider_spots = {"slider_left": BLOCK_SLIDER_LEFT, "slider_right": BLOCK_SLIDER_RIGHT}
    # Table spots: red takes the first; blue the second if red is on the table, else the first; pink the second.
    red_on_table = initial_state["red_block"] == "table"
    for (block, offset), table_spot in zip((("red_block", 6), ("blue_block", 12), ("pink_block", 18)),
                                           (table[0], table[1] if red_on_table else table[0], table[1])):
        scene[offset:offset + 3] = slider_spots.get(initial_state[block], table_spot)
        scene[offset + 5] = rng.uniform(*BLOCK_YAW_RANGE)  # drawn for every block, in this order
    return NEUTRAL_ROBOT_OBS.copy(), scene


# ---------------------------------------------------------------------------------------------- rollout
@dataclass
class SimObservation:
    rgb_static: np.ndarray   # (H, W, 3) uint8
    rgb_gripper: np.ndarray  # (h, w, 3) uint8
    robot_obs: np.ndarray    # (15,)
    scene_obs: np.ndarray    # (24,)


class SubtaskEnv(Protocol):
    """The simulator as the protocol needs it (deer_ros.calvin.sim.CalvinSim)."""

    def reset(self, robot_obs: np.ndarray, scene_obs: np.ndarray) -> SimObservation: ...
    def start_subtask(self) -> None: ...  # remember the state the oracle compares against
    def step(self, action: np.ndarray) -> tuple[SimObservation, np.ndarray]: ...  # (obs, action applied)
    def subtask_done(self, task: str) -> bool: ...


class ChainPolicy(Protocol):
    def reset(self) -> None: ...  # clear the history: called before every subtask
    def act(self, obs: SimObservation, instruction: str) -> Any: ...
    # act returns the (7,) action, or an object with `.action` and optionally `.gflops`, `.layers` and
    # `.exit_index` (deer_ros.model.policy.StepResult), whose compute is then counted.


class InvalidAction(ValueError):
    """An action the simulator must not execute (NaN, Inf, wrong shape): the subtask fails, the run goes on."""


@dataclass
class SubtaskResult:
    task: str
    instruction: str
    success: bool
    steps: int
    gflops: float = 0.0  # summed over the steps
    layers: int = 0      # summed over the steps
    exits: dict[int, int] = field(default_factory=dict)  # exit index -> steps that left there
    clipped: int = 0     # steps whose pose values were clipped to [-1, 1] before the simulator got them
    fault: str = ""      # why the subtask was failed without running out of steps (e.g. a NaN action)


@dataclass
class ChainResult:
    sequence: EvalSequence
    subtasks: list[SubtaskResult] = field(default_factory=list)
    complete: bool = False  # False while running, and for a chain cut short (SIGINT, a lost policy)

    @property
    def successes(self) -> int:
        """Completed subtasks (the chain stops at the first failure, so they are consecutive)."""
        return sum(s.success for s in self.subtasks)


def _split_policy_output(out: Any) -> tuple[np.ndarray, float, int, int]:
    if hasattr(out, "action"):
        return (np.asarray(out.action), float(getattr(out, "gflops", 0.0)), int(getattr(out, "layers", 0)),
                int(getattr(out, "exit_index", 0)))
    return np.asarray(out), 0.0, 0, 0


def run_subtask(env: SubtaskEnv, policy: ChainPolicy, obs: SimObservation, task: str, instruction: str,
                max_steps: int = SUBTASK_STEPS, recorder: CalvinRecorder | None = None
                ) -> tuple[SubtaskResult, SimObservation]:
    """One subtask from `obs`: up to `max_steps` policy steps, stopping at the oracle's first success.
    An invalid action (InvalidAction from the simulator) fails the subtask at once, with the reason in `fault`.
    With a `recorder`, every (observation, applied action) is recorded and the subtask becomes an episode."""
    policy.reset()
    env.start_subtask()
    result = SubtaskResult(task, instruction, success=False, steps=0)
    for _ in range(max_steps):
        action, gflops, layers, exit_index = _split_policy_output(policy.act(obs, instruction))
        try:
            next_obs, applied = env.step(action)
        except InvalidAction as exc:
            result.fault = f"step {result.steps}: {exc}"
            break
        result.gflops += gflops
        result.layers += layers
        if exit_index:
            result.exits[exit_index] = result.exits.get(exit_index, 0) + 1
        result.clipped += int(action.shape == (7,) and not np.array_equal(applied[:6], action[:6]))
        if recorder is not None:
            recorder.add_frame(obs.rgb_static, obs.rgb_gripper, applied,
                               robot_obs=obs.robot_obs, scene_obs=obs.scene_obs)
        obs = next_obs
        result.steps += 1
        if env.subtask_done(task):
            result.success = True
            break
    if recorder is not None and result.steps:
        recorder.end_episode(instruction, task)
    return result, obs


def run_chain(env: SubtaskEnv, policy: ChainPolicy, sequence: EvalSequence, instructions: Mapping[str, str],
              max_steps: int = SUBTASK_STEPS, recorder: CalvinRecorder | None = None,
              chain: ChainResult | None = None) -> ChainResult:
    """One LH-MTLC chain: reset to its initial state once, then its subtasks until the first failure.
    `chain` (optional) is filled in place as subtasks finish, so a caller keeps what ran if the chain is cut."""
    texts = [instruction_for(task, instructions) for task in sequence.tasks]  # fail before running anything
    obs = env.reset(*initial_state_to_obs(sequence.initial_state))
    chain = ChainResult(sequence) if chain is None else chain
    for task, instruction in zip(sequence.tasks, texts):
        result, obs = run_subtask(env, policy, obs, task, instruction, max_steps, recorder)
        chain.subtasks.append(result)
        if not result.success:
            break
    chain.complete = True
    return chain


def run_lh_mtlc(env: SubtaskEnv, policy: ChainPolicy, sequences: Sequence[EvalSequence],
                instructions: Mapping[str, str] | None = None, max_steps: int = SUBTASK_STEPS,
                recorder: CalvinRecorder | None = None,
                on_chain: Callable[[int, ChainResult], None] | None = None,
                results: list[ChainResult] | None = None) -> list[ChainResult]:
    """Run every chain in order; `on_chain(i, result)` is called after each (progress, logging).

    `results` (optional) is the list the chains are appended to as they start, so that whatever stops the run
    (an exception, a signal) leaves every finished chain and the unfinished one (complete=False) with the caller.
    """
    instructions = canonical_instructions() if instructions is None else instructions
    results = [] if results is None else results
    for i, sequence in enumerate(sequences):
        chain = ChainResult(sequence)
        results.append(chain)
        run_chain(env, policy, sequence, instructions, max_steps, recorder, chain)
        if on_chain is not None:
            on_chain(i, chain)
    return results


def compute_means(subtasks: Sequence[SubtaskResult]) -> dict:
    steps = sum(s.steps for s in subtasks)
    exits: dict[int, int] = {}
    for s in subtasks:
        for index, n in s.exits.items():
            exits[index] = exits.get(index, 0) + n
    counted = sum(exits.values())
    return {"steps": steps,
            "mean_gflops": sum(s.gflops for s in subtasks) / steps if steps else None,
            "mean_layers": sum(s.layers for s in subtasks) / steps if steps else None,
            "mean_exit": sum(i * n for i, n in exits.items()) / counted if counted else None,
            "exit_histogram": {str(i): exits[i] for i in sorted(exits)}}


def lh_mtlc_metrics(results: Sequence[ChainResult]) -> dict:
    """JSON-ready summary: success rate for 1..5 and average successful length over the complete chains,
    per-task counts, faults and clipping, and compute.

    Compute (`mean_gflops`, `mean_layers`, `mean_exit`, `exit_histogram`) is given over every step and, under
    `successful`, over the steps of successful subtasks only (the convention of DeeR's reported average exit).
    Subtasks of an unfinished chain count in the compute and the per-task counts but not in the success rates.
    """
    complete = [r for r in results if r.complete]
    lengths = np.array([r.successes for r in complete])
    subtasks = [s for r in results for s in r.subtasks]
    per_task: dict[str, dict[str, int]] = {}
    for s in subtasks:
        counts = per_task.setdefault(s.task, {"attempts": 0, "successes": 0})
        counts["attempts"] += 1
        counts["successes"] += int(s.success)
    compute = compute_means(subtasks)
    successful = compute_means([s for s in subtasks if s.success])
    return {
        "chains": len(complete),
        "unfinished_chains": len(results) - len(complete),
        "success_rates": {str(i): float(np.mean(lengths >= i)) if len(complete) else 0.0
                          for i in range(1, CHAIN_LENGTH + 1)},
        "avg_len": float(lengths.mean()) if len(complete) else 0.0,
        "per_task": dict(sorted(per_task.items())),
        **compute,
        "mean_gflops_successful": successful["mean_gflops"],
        "successful": successful,
        "faults": sum(bool(s.fault) for s in subtasks),
        "clipped_steps": sum(s.clipped for s in subtasks),
    }
