"""Training and evaluation, one job per module:

- ``builders``: network, weighting, optimiser, schedule and mixed precision from a config;
- ``distributed``: one process or one rank of a job, and the collectives the loop needs;
- ``sampling``: the batches and augmentation seeds of every step;
- ``checkpoint``: checkpoints and random state;
- ``evaluate``: metrics, instance AP and the checkpoint criterion over a split;
- ``step``: the optimiser step every loop shares (``update``) and the aggregators' checks;
- ``cost``: a run's peak memory;
- ``loop``: the one training loop of every run of every study (``Loop``);
- ``scene``: the scene network's run on that loop (``SceneLoop``, ``train``);
- ``runs``: finished run directories (``load_run``, ``evaluate_run``, ``predictor``).
"""

from uncertainty_mtl.engine.builders import NetWithLoss, build_model, build_weighting
from uncertainty_mtl.engine.distributed import shutdown_distributed
from uncertainty_mtl.engine.evaluate import CHECKPOINT_CRITERION, evaluate
from uncertainty_mtl.engine.finished import evaluate_checkpoint, evaluate_run, load_run, predictor
from uncertainty_mtl.engine.loop import TrainingError
from uncertainty_mtl.engine.scene import train

__all__ = [
    "CHECKPOINT_CRITERION",
    "NetWithLoss",
    "TrainingError",
    "build_model",
    "build_weighting",
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_run",
    "load_run",
    "predictor",
    "shutdown_distributed",
    "train",
]
