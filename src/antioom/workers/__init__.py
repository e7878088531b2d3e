"""Scale-out: staged uploads imported by a fleet of Celery workers (see jobs and tasks)."""
