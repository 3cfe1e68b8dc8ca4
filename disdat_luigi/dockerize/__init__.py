"""Build (and push) one image per pipeline module: `disdat-module-submodule`."""
