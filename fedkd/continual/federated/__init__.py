"""Federated continual learning (FCL): the clients' side and the server student's training.

Every client meets a sequence of tasks (on the same or a shifted schedule), each with its own
(Dirichlet-skewed) share of the task's training rows, and learns it with a local continual
learner — fine-tuning, LwF, or joint training on its own data of every task so far (the upper
bound). The federation then either averages weights (FedAvg, the baseline) or shares soft
predictions on public, unlabelled inputs of the tasks met so far (Federated Distillation): the
server aggregates them into a teacher and distils a student, and the student must not forget
either — it keeps its own previous outputs with the LwF term (:class:`StudentDistiller`).

What lives here is the ML, pure torch, grouped by role: the per-client data and schedules
(:mod:`.data`), the client (:mod:`.client`) and the student's distillation, weight averaging
and byte counts (:mod:`.server`). The stage loop, which calls
:func:`strategies.aggregation.aggregate`, lives in :mod:`strategies.fcl` (the package layering
keeps ``fedkd`` free of ``strategies``).

Reuses :mod:`fedkd.kd` (every distillation), :mod:`fedkd.continual` (task sequences,
learners, evaluation) and :mod:`fedkd.training`; imports no Flower, Ray or Hydra.
"""

from fedkd.continual.federated.client import (
    CLIENT_LEARNERS,
    ClientUpload,
    FCLClient,
    FCLClientSpec,
    build_client_learner,
)
from fedkd.continual.federated.data import (
    FederatedTasks,
    Partition,
    Query,
    client_order,
    federated_split,
    stage_queries,
)
from fedkd.continual.federated.server import (
    StudentDistiller,
    average_state_dicts,
    prediction_nbytes,
    weights_nbytes,
)

__all__ = [
    "CLIENT_LEARNERS",
    "ClientUpload",
    "FCLClient",
    "FCLClientSpec",
    "FederatedTasks",
    "Partition",
    "Query",
    "StudentDistiller",
    "average_state_dicts",
    "build_client_learner",
    "client_order",
    "federated_split",
    "prediction_nbytes",
    "stage_queries",
    "weights_nbytes",
]
