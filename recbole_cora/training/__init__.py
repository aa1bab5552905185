"""Training and evaluation.

* ``recbole_trainers``: RecBole's own trainers with safe checkpoints and the task's evaluation
  (``recbole_cora.tasks``) mixed in (the baselines and the CF, DIN and sequential encoder stages);
* ``trainer``: ``LLMTrainer``, the loop and ``fit`` of the LLM models, run by accelerate;
* ``evaluation``: its evaluation loop, one split-score-gather loop; each task scores a batch its own way;
* ``sampling``: the rows of an epoch, their order and loader, the learning-rate schedule;
* ``callbacks``: the learning curve, the time estimate, Laser's item matrix;
* ``resume``: the resume state and its format.

``recbole_cora.utils.get_trainer`` looks a model's trainer up here (``<Model>Trainer``, else ``LLMTrainer`` for an
LLM model, else RecBole's with the task's mixin).
"""

from recbole_cora.training.recbole_trainers import CheckpointMixin, with_mixin
from recbole_cora.training.trainer import LLMTrainer

__all__ = ["CheckpointMixin", "LLMTrainer", "with_mixin"]
