"""AWS Batch, in layers: `client` (boto3 calls) -> `state` (a job's phase, exit code, attempts and
log) -> `spec` (job assembly) and `capacity` (what a queue can place); `double` is an in-memory
stand-in for the boto3 clients, for tests. Nothing above this package knows a Batch status string
or where a job's log stream is."""
