"""The block controller: one process per block, beside its executor, running three loops.

* **mapper** — keeps the executor's instance registry (``aios:block:{B}:instances``) equal to
  the instances the control plane keeps for the block (``GET /api/v1/blocks/<id>/``);
* **autoscaler** — evaluates the block's ``autoscaler`` policy in-process on live metrics
  (queue lengths, latency, throughput) and asks the control plane to scale
  (``POST /api/v1/blocks/<id>/scale/``), never outside ``minInstances``..``maxInstances``;
* **health checker** — polls every instance's ``/health``, runs the ``stabilityChecker``
  policy, asks the control plane to replace failing instances
  (``POST /api/v1/blocks/<id>/instances/<iid>/replace/``) and reports health.

It authenticates with the block's service token and serves ``/autoscaler/mgmt``,
``/health-checker/mgmt``, ``/mapper/mgmt`` and ``/health``. No Django import: it ships in
the block's image like the rest of ``block_sdk``. Run it with
``python -m block_sdk.block_controller`` (configuration in :mod:`.config`).
"""

from block_sdk.block_controller.config import ControllerConfig, load_config

__all__ = ["ControllerConfig", "load_config"]
