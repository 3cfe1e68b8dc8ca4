from setuptools import find_packages, setup

setup(
    name="disdat-example-pipes",
    version="0.1.0",
    description="Example disdat_luigi pipelines (a pipe root: one image per module)",
    packages=find_packages(include=["etl", "etl.*", "ml", "ml.*"]),
    install_requires=["disdat_luigi", "pandas", "numpy"],
)
