# The Airflow image for docker-compose.yaml: the official image plus this package, so
# the provider entry point (and the trigger classes) exist in every Airflow container,
# the triggerer included. Keep the tag equal to the apache-airflow pin in constraints.txt.
FROM apache/airflow:3.3.2-python3.11

ARG AIRFLOW_VERSION=3.3.2
COPY --chown=airflow:root pyproject.toml README.md /opt/airflow-batch-streaming/
COPY --chown=airflow:root airflow_batch_streaming /opt/airflow-batch-streaming/airflow_batch_streaming
# Installing apache-airflow at the image's own version keeps pip from moving it.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/airflow-batch-streaming
