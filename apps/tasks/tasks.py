"""Celery tasks of the tasks app: a self-test that exercises progress and failure."""

import time

from apps.tasks.services import TaskRecorder, tracked_task


@tracked_task(name="aios.tasks.selftest")
def selftest(recorder: TaskRecorder, steps: int = 3, delay: float = 0.1, fail_at: int = -1):
    """Report progress in ``steps`` steps; raise at step ``fail_at`` when it is ≥ 0."""
    steps = max(1, min(int(steps), 100))
    for step in range(steps):
        if step == fail_at:
            raise RuntimeError(f"selftest asked to fail at step {step}")
        time.sleep(max(0.0, min(float(delay), 5.0)))
        recorder.progress(int(100 * (step + 1) / steps), f"step {step + 1}/{steps}", step=step + 1)
    return {"steps": steps, "ok": True}
