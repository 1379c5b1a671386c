"""Domain operations of the vdags app, called by the parser handler, REST views, Celery
tasks, the admin and management commands alike.

- ``vdags``: create (quick check + ``vdag_creation`` task), dry run, process, delete;
- ``specs``: spec planning (assignment, nested expansion, compilation, protocols);
- ``controllers``: vDAG controllers (pre-checks, driver workloads, status, removal);
- ``telemetry``: quality samples and metrics history pulled from controllers;
- ``workloads``: where serving workloads answer and whether they do (shared with
  ``apps.inference``).
"""
