"""The `dsdt` command line: argument parsing and printing only, over `disdat_luigi.api`."""
