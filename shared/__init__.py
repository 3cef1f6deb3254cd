"""What the dispatcher and the workers both import: the task contract, the
configuration, the Celery app and logging."""
