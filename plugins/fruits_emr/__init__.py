"""EMR configuration and S3 helpers of the fruits_features DAG.

`config` holds pure functions (run configuration, job-flow overrides, Spark steps, cost);
`storage` holds the S3 work of the DAG's Python tasks; `operators` holds the small
provider-operator subclasses. Nothing here calls AWS at import time.
"""
