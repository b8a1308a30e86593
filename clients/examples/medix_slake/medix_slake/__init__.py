"""The verifiers taskset `medix-slake`: the bundled SLAKE questions scored by the MediX reward service.

verifiers resolves a taskset id to an installed top-level package exporting one `Taskset` subclass via `__all__`;
this package is that, around clients.adapters.verifiers.SlakeTaskset. Options: `--env.taskset.dataset` (JSONL),
`--env.taskset.task.medix-url` and the other `medix-*` task fields (or MEDIX_URL / MEDIX_API_KEY).
"""

from clients.adapters.verifiers import SlakeTaskset

__all__ = ["SlakeTaskset"]
