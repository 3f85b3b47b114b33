"""Google Cloud Batch jobs with Image Streaming, checked before submission, for Apache Airflow 3."""

__version__ = "0.1.0"
