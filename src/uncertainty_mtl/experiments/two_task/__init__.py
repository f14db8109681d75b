"""The two-task study of the reproduction report (Key 2019, §3): classification + reconstruction.

One small convolutional auto-encoder with a classification head learns to classify images
(cross-entropy, softmax likelihood) and to reconstruct them (L1, Laplace likelihood). Rows, as in
the report's Table 1, plus our ablation:

* classification only, reconstruction only (one-hot fixed weights);
* unweighted sum (0.5, 0.5);
* approximately optimal fixed weights: the best multi-task point of a weight grid, chosen on the
  validation split (:data:`~uncertainty_mtl.experiments.benchmark.selection.CANDIDATE_CRITERION`);
* learned weights, likelihood convention (softmax term for cross-entropy, Laplace term for L1);
* learned weights, paper convention (Gaussian term for the L1 loss too): the report's
  "incorrect coefficients" (its eq. 32), kept as an ablation.

Every fixed-weight point of the grid is trained for every seed (the grid's ends are the single-task
rows, its middle the unweighted row). The test split is evaluated for the reported numbers and the
curves only; no choice looks at it. The runs go through the common runner
(``experiments.runner``): finished runs are found on disk, so an interrupted study resumes where
it stopped (a run itself takes seconds and restarts from its first step).

One job per module: ``config`` (the study's settings, presets and rows), ``training`` (one run,
through the engine's step, recorded in the scene runs' format), ``study`` (the runs for the
runner, the choice on val and the summary) and ``report`` (the table and the figures).
"""

from uncertainty_mtl.experiments.two_task.config import (
    LIKELIHOODS,
    METHOD_KINDS,
    PRESETS,
    REFERENCE,
    REFERENCE_APPROX_OPTIMAL,
    TASKS,
    StudyConfig,
    TwoTaskRun,
    config_dict,
    fixed_run,
    learned_run,
    method_run,
    preset_config,
    smoke_config,
)
from uncertainty_mtl.experiments.two_task.curves import HORIZON, choose_schedule, learning_curves
from uncertainty_mtl.experiments.two_task.report import (
    plot_grid,
    plot_learning_curves,
    plot_log_variances,
    plot_test_curves,
    table,
)
from uncertainty_mtl.experiments.two_task.study import (
    TwoTaskStudy,
    run_study,
    select_weight,
    split_summaries,
    summarise_study,
)
from uncertainty_mtl.experiments.two_task.training import (
    RESULT_FILE,
    TwoTaskLoop,
    evaluate,
    load_splits,
    task_losses,
    train_run,
)

__all__ = [
    "HORIZON",
    "LIKELIHOODS",
    "METHOD_KINDS",
    "PRESETS",
    "REFERENCE",
    "REFERENCE_APPROX_OPTIMAL",
    "RESULT_FILE",
    "TASKS",
    "StudyConfig",
    "TwoTaskLoop",
    "TwoTaskRun",
    "TwoTaskStudy",
    "choose_schedule",
    "config_dict",
    "evaluate",
    "fixed_run",
    "learned_run",
    "learning_curves",
    "load_splits",
    "method_run",
    "plot_grid",
    "plot_learning_curves",
    "plot_log_variances",
    "plot_test_curves",
    "preset_config",
    "run_study",
    "select_weight",
    "smoke_config",
    "split_summaries",
    "summarise_study",
    "table",
    "task_losses",
    "train_run",
]
