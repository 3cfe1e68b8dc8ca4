"""`dsdt run`: a pipeline in its module's image, on the local Docker engine or AWS Batch."""
