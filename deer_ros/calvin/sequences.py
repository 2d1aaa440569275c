"""CALVIN's standard LH-MTLC evaluation chains, generated here instead of downloaded.

CALVIN (calvin_models/calvin_agent/evaluation/multistep_sequences.py, `get_sequences(1000)`) builds its evaluation
set from a symbolic model of the scene: every task has preconditions on a small state (lights, slider, drawer,
where each block is, whether one is grasped) and effects on it. From every admissible initial state it draws
5-task chains at random (numpy's legacy generator seeded with the state's index) and keeps a chain when each task
applies in exactly one way along it and no two tasks share a category; the chains of all states are then shuffled
with seed 0. `standard_sequences()` repeats that procedure with the same task graph, task order, constraints and
seeds, so it yields CALVIN's own 1000 chains (checked against CALVIN's code: docs/calvin.md). The facts below
(task rules, categories, their order) are the benchmark's; the code is ours.
"""
from __future__ import annotations

from itertools import product
from typing import Any, Mapping, Sequence

import json
import os
from pathlib import Path

import numpy as np

from deer_ros.calvin.protocol import CHAIN_LENGTH, INITIAL_STATE_VALUES, EvalSequence, load_eval_sequences
from deer_ros.files import write_text_atomic

State = dict[str, Any]
Rule = tuple[dict[str, Any], dict[str, Any]]  # (condition, effect); a list in a condition means "one of"

BLOCKS = ("red", "blue", "pink")
SLIDER_SIDES = ("slider_left", "slider_right")
STANDARD_COUNT = 1000  # CALVIN's NUM_SEQUENCES


def _block(color: str) -> str:
    return f"{color}_block"


def _others(color: str) -> list[str]:
    return [c for c in BLOCKS if c != color]


def _task_rules() -> dict[str, list[Rule]]:
    """Task id -> rules, in CALVIN's key order (the random draw picks from the ids in this order)."""
    rules: dict[str, list[Rule]] = {}
    free = {"grasped": 0}
    for verb in ("rotate", "push"):
        for color in BLOCKS:
            on_table = {_block(color): "table"}
            for side in ("right", "left"):
                rules[f"{verb}_{color}_block_{side}"] = [({**on_table, **free}, dict(on_table))]
    rules["move_slider_left"] = [({"slider": "right", **free}, {"slider": "left"})]
    rules["move_slider_right"] = [({"slider": "left", **free}, {"slider": "right"})]
    rules["open_drawer"] = [({"drawer": "closed", **free}, {"drawer": "open"})]
    rules["close_drawer"] = [({"drawer": "open", **free}, {"drawer": "closed"})]
    for color in BLOCKS:
        block = _block(color)
        lifted = {block: "grasped", "grasped": 1}
        rules[f"lift_{color}_block_table"] = [({block: "table", **free}, lifted)]
        # A block in a slider compartment can be reached only while the door leaves that side open.
        rules[f"lift_{color}_block_slider"] = [({block: "slider_left", "slider": "right", **free}, lifted),
                                               ({block: "slider_right", "slider": "left", **free}, lifted)]
        rules[f"lift_{color}_block_drawer"] = [({block: "drawer", "drawer": "open", **free}, lifted)]
    # The door covers one compartment; the grasped block goes into the other one.
    rules["place_in_slider"] = [({_block(c): "grasped", "slider": door, "grasped": 1},
                                 {_block(c): f"slider_{door}", "grasped": 0})
                                for c in BLOCKS for door in ("right", "left")]
    rules["place_in_drawer"] = [({_block(c): "grasped", "drawer": "open", "grasped": 1},
                                 {_block(c): "drawer", "grasped": 0}) for c in BLOCKS]
    rules["stack_block"] = [({_block(top): "grasped", _block(bottom): "table", "grasped": 1},
                             {_block(top): "stacked_top", _block(bottom): "stacked_bottom", "grasped": 0})
                            for top in BLOCKS for bottom in _others(top)]
    rules["unstack_block"] = [({_block(top): "stacked_top", _block(bottom): "stacked_bottom", **free},
                               {_block(top): "table", _block(bottom): "table"})
                              for top in BLOCKS for bottom in _others(top)]
    for light in ("lightbulb", "led"):
        rules[f"turn_on_{light}"] = [({light: 0, **free}, {light: 1})]
        rules[f"turn_off_{light}"] = [({light: 1, **free}, {light: 0})]
    # Pushing a block into the drawer: it must be the only block on the table (CALVIN lists the others in the
    # order blue, pink / red, pink / blue, red; only the set matters).
    rules["push_into_drawer"] = [({_block(c): "table", **{_block(o): list(SLIDER_SIDES) for o in _others(c)},
                                   "drawer": "open", **free}, {_block(c): "drawer", "grasped": 0})
                                 for c in BLOCKS]
    return rules


TASK_RULES: dict[str, list[Rule]] = _task_rules()

# Tasks of one category never share a chain (CALVIN's task_categories).
_CATEGORY_GROUPS: tuple[tuple[str, ...], ...] = (
    tuple(f"{v}_{c}_block_{s}" for v in ("rotate", "push") for c in BLOCKS for s in ("right", "left")),
    ("move_slider_left", "move_slider_right"),
    ("open_drawer", "close_drawer"),
    tuple(f"lift_{c}_block_table" for c in BLOCKS),
    tuple(f"lift_{c}_block_slider" for c in BLOCKS),
    tuple(f"lift_{c}_block_drawer" for c in BLOCKS),
    ("place_in_slider", "place_in_drawer"),
    ("turn_on_lightbulb", "turn_off_lightbulb", "turn_on_led", "turn_off_led"),
    ("push_into_drawer",),
    ("stack_block",),
    ("unstack_block",),
)
TASK_CATEGORY: dict[str, int] = {task: i + 1 for i, group in enumerate(_CATEGORY_GROUPS) for task in group}


def _holds(state: Mapping[str, Any], condition: Mapping[str, Any]) -> bool:
    return all(state[k] in v if isinstance(v, list) else state[k] == v for k, v in condition.items())


def next_states(state: Mapping[str, Any], task: str) -> list[State]:
    """The states `task` can lead to from `state` (one per applicable rule)."""
    return [{**state, **effect} for condition, effect in TASK_RULES[task] if _holds(state, condition)]


def chain_is_valid(state: Mapping[str, Any], tasks: Sequence[str]) -> bool:
    """CALVIN's check: each task applies in exactly one way in turn, and the categories are all different."""
    names = list(TASK_RULES)
    return _ChainChecker().valid(tuple(state[k] for k in INITIAL_STATE_VALUES), [names.index(t) for t in tasks])


def initial_states() -> list[State]:
    """Admissible initial states in CALVIN's order: one or two blocks on the table, at most one per compartment."""
    states = []
    for values in product(*INITIAL_STATE_VALUES.values()):
        if values.count("table") in (1, 2) and values.count("slider_right") < 2 and values.count("slider_left") < 2:
            states.append(dict(zip(INITIAL_STATE_VALUES, values)))
    return states


class _ChainChecker:
    """CALVIN's chain check on task indices, with the single-rule transitions memoised: its procedure draws
    about 8 million candidate chains for the standard 1000, so the check must be cheap."""

    def __init__(self) -> None:
        self._next: dict[tuple, tuple | None] = {}
        self._categories = [TASK_CATEGORY[t] for t in TASK_RULES]
        self._names = list(TASK_RULES)

    def _step(self, state: tuple, task: int) -> tuple | None:
        key = (state, task)
        if key not in self._next:
            options = next_states(dict(zip(INITIAL_STATE_VALUES, state)), self._names[task])
            self._next[key] = tuple(options[0].values()) if len(options) == 1 else None
        return self._next[key]

    def valid(self, state: tuple, tasks: Sequence[int]) -> bool:
        if len({self._categories[t] for t in tasks}) != len(tasks):
            return False
        for task in tasks:
            state = self._step(state, int(task))
            if state is None:
                return False
        return True


def _draw_chains(state: Mapping[str, Any], count: int, seed: int, checker: _ChainChecker) -> list[tuple[str, ...]]:
    """CALVIN's draw: `rng.choice(task ids, 5, replace=False)` until `count` valid chains. That choice is the first
    5 entries of a fresh permutation of the 34 indices, drawn here the same way without building arrays of names."""
    rng = np.random.RandomState(seed)  # the legacy generator: its stream is fixed across numpy versions
    names = list(TASK_RULES)
    key = tuple(state.values())
    order, identity = np.arange(len(names)), np.arange(len(names))
    chains: list[tuple[str, ...]] = []
    while len(chains) < count:
        order[:] = identity
        rng.shuffle(order)  # == rng.permutation(len(names)), which choice(..., replace=False) uses
        if checker.valid(key, order[:CHAIN_LENGTH]):
            chains.append(tuple(names[i] for i in order[:CHAIN_LENGTH]))
    return chains


def standard_sequences(count: int = STANDARD_COUNT) -> list[EvalSequence]:
    """CALVIN's evaluation chains: `count` of them spread evenly over the initial states, then shuffled (seed 0).
    count=1000 gives the set every published CALVIN number is measured on; DeeR evaluates its first 224."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    states = initial_states()
    per_state = [len(part) for part in np.array_split(np.arange(count), len(states))]
    checker = _ChainChecker()
    chains = [(state, tasks) for seed, (state, n) in enumerate(zip(states, per_state))
              for tasks in _draw_chains(state, n, seed, checker)]
    np.random.RandomState(0).shuffle(chains)
    return [EvalSequence(dict(state), tasks) for state, tasks in chains]


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deer_ros"


def write_sequences(sequences: Sequence[EvalSequence], path: str | os.PathLike) -> Path:
    """Write chains as an eval_sequences.json (CALVIN's layout: a list of [initial_state, [5 task ids]])."""
    path = Path(path).expanduser()
    return write_text_atomic(path, json.dumps([[s.initial_state, list(s.tasks)] for s in sequences]))


def cached_standard_sequences(folder: str | os.PathLike | None = None) -> list[EvalSequence]:
    """`standard_sequences()`, generated once (about a minute on one core) and then read from
    `<folder or ~/.cache/deer_ros>/calvin_eval_sequences_1000.json`."""
    path = Path(folder or cache_dir()) / f"calvin_eval_sequences_{STANDARD_COUNT}.json"
    if path.is_file():
        sequences = load_eval_sequences(path)
        if len(sequences) == STANDARD_COUNT:
            return sequences
    sequences = standard_sequences()
    write_sequences(sequences, path)
    return sequences
