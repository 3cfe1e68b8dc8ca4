from pathlib import Path

from setuptools import find_namespace_packages, setup

version = {}
exec(Path("disdat_luigi/__init__.py").read_text().split("def __getattr__")[0], version)
layout = {}  # packages, package data and entry points: shared with the image build's setup.py
exec(Path("disdat_luigi/packaging.py").read_text(), layout)

setup(
    name="disdat_luigi",
    version=version["__version__"],
    description="Data-versioned luigi pipelines that run the same on a laptop, in Docker and on AWS Batch",
    long_description=Path("README.md").read_text(encoding="utf-8") if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_namespace_packages(include=layout["PACKAGES_INCLUDE"], exclude=layout["PACKAGES_EXCLUDE"]),
    package_data=layout["PACKAGE_DATA"],
    include_package_data=True,
    install_requires=[
        "luigi>=3.5",
        "boto3>=1.28",
        "docker>=7.0",
        "numpy>=1.24",
        "pandas>=2.0",
        "pyarrow>=14",
        "tqdm>=4.60",
        'tomli>=2; python_version < "3.11"',
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.2",
            "pytest-cov>=5",
            "moto[server]>=5.0",
            "ruff>=0.5",
            "mypy>=1.10",
        ],
    },
    entry_points=layout["ENTRY_POINTS"],
)
