"""Running PipeTask pipelines on luigi: identities, reuse decisions, the driver."""
