"""What an installation of disdat_luigi consists of. The repository's setup.py and the setup.py
of the copy that `dsdt dockerize` installs into an image both read this file (it imports
nothing), so the two cannot drift apart."""

PACKAGES_INCLUDE = ["disdat_luigi", "disdat_luigi.*"]
PACKAGE_DATA = {"disdat_luigi": ["disdat.cfg.example", "dockerizer/*", "dockerizer/**/*"]}
ENTRY_POINTS = {"console_scripts": ["dsdt = disdat_luigi.cli.main:run"]}
