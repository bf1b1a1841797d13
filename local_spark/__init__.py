"""Local Spark on a developer's machine and the DAG's local compute mode: `make demo`/`make run`, the session,
its JVM options and class archive, S3A settings for any S3 server. Never staged to EMR."""
