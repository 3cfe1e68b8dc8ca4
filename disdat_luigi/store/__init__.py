"""The local bundle store: contexts, bundles, manifests, the sqlite index and value codecs."""
