"""Pure Python shared by the Spark jobs and the DAG (no pyspark, no boto3): S3 addressing, the files a run
passes between them, and the model and input choices both offer."""
