CREATE DATABASE mlflow_auth OWNER mlflow;
