"""The S3 remote: where bundles live on S3, how they get there and back, atomically and verified."""
