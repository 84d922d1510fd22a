"""A job's life on a worker, in the order it happens.

- ``claim``: ``run_job`` claims the job (one conditional UPDATE), runs it under the
  ``heartbeat`` (lease renewal, cancel relay) and the ``shutdown`` flag (SIGTERM), and ends
  with an ``outcome``; exceptions become outcomes through ``failures``.
- ``run``: ``JobRun``, the claimed job's steps: load the dataset, build the ``plan`` (with
  ``init_weights`` for ``model.init``, the ``criterion`` and the ``batch_transforms``), resume
  from the last of the ``checkpoints``, fit with ``progress`` callbacks (epoch rows,
  ``checkpoints`` written off the training thread, and for a trial of an ASHA experiment a
  ``pruning`` request that the experiment advance), and conclude: export the ``artifacts``
  (``onnx_export`` checks the ONNX graph against PyTorch), then ``registration`` records the
  model and finishes the job, or the run releases, cancels or fails it.
- ``dbretry``: every database write above rides out a short outage.
"""

from workers.lifecycle.claim import run_job
from workers.lifecycle.failures import classify_error
from workers.lifecycle.outcome import Outcome
from workers.lifecycle.plan import TrainingPlan, build_training

__all__ = ["Outcome", "TrainingPlan", "build_training", "classify_error", "run_job"]
