"""Entry point of a Conveyor worker: `python worker.py` (the same as `conveyor worker`).

The registration itself (every workflow and activity on the task queue) is `conveyor.worker`.
Configure with TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / CONVEYOR_TASK_QUEUE / CONVEYOR_DATA_DIR.
"""

if __name__ == "__main__":
    from conveyor.cli import main

    main(["worker"])
