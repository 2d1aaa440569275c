"""deer_ros.exits: exit criteria, calibration files, the threshold solver, exit deciders, budget tracking and the
online threshold search. ROS-free. Importing it (and every module but one) does not import torch: torch tensors
are accepted where the model hands them over. The exception is `calibration_reference`, which drives the model's
layers itself as the reference's protocol does (test/exits/test_exits_torch_free.py keeps the rest so).

What the policy node uses: `ExitBudget` (settings + controller + trackers + the learned time costs `CostModel`;
`check`/`apply`/`record`/`report`/`cost_table`),
`Calibration.load`, `BudgetError`; what scripts use: `FixedExit`, `ExitController`, `collect_calibration`,
`solver.solve_budget` / `solve_exit_ratio` / `simulate`, `bayes.search_thresholds`.
"""
from deer_ros.exits.calibration import Calibration, CalibrationError, collect_calibration
from deer_ros.exits.costs import CostModel, CostTable
from deer_ros.exits.controller import (BudgetError, BudgetSettings, ExitBudget, ExitController, FixedExit, refusal,
                                       resolve_budget)
from deer_ros.exits.criteria import CRITERIA, DEFAULT_CRITERION, criterion_names, get_criterion
from deer_ros.exits.tracking import BudgetTracker

__all__ = ["BudgetError", "BudgetSettings", "BudgetTracker", "CRITERIA", "Calibration", "CalibrationError",
           "CostModel", "CostTable",
           "DEFAULT_CRITERION", "ExitBudget", "ExitController", "FixedExit", "collect_calibration",
           "criterion_names", "get_criterion", "refusal", "resolve_budget"]
