"""Test and benchmark support: real server processes (PostgreSQL, moto S3, MLflow, BentoML)
started, awaited and stopped one way. Never shipped in a bento or the wheel."""
