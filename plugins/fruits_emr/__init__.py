"""The fruits_features DAG's plugin: run settings, S3 layout, EMR requests and the tasks' S3 work.

Pure functions (no AWS calls): `settings` (RunConfig, validation), `params` (the Params form),
`layout` (S3 paths, commit and PCA pointer records), `artifacts` (what is staged, by content
hash), `emr_request` (job-flow overrides, Spark steps), `pca_plan`, `reconcile`, `cost`.
With AWS: `storage` (the tasks' S3 work), `tasks` (one function per DAG task), `local` (the
steps on the worker), `operators` (provider-operator subclasses). Nothing here calls AWS at
import time.
"""
