"""rarefit workers: the Celery side that runs training jobs, and the training core."""
