"""What an installation of disdat_luigi consists of. The repository's setup.py and the setup.py
of the copy that `dsdt dockerize` installs into an image both read this file (it imports
nothing), so the two cannot drift apart."""

# the image-build template (dockerizer/) is a data directory: declared as a namespace package of
# its own, so setuptools installs it without warning that a directory of package data is not a package
PACKAGES_INCLUDE = ["disdat_luigi", "disdat_luigi.*"]
PACKAGES_EXCLUDE = ["*.__pycache__"]
PACKAGE_DATA = {"disdat_luigi": ["disdat.cfg.example"], "disdat_luigi.dockerizer": ["*", "**/*"]}
ENTRY_POINTS = {"console_scripts": ["dsdt = disdat_luigi.cli.main:run"]}
