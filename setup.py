"""Orbited: browser TCPSockets over WebSocket and Comet, an access-checked TCP proxy,
and a built-in STOMP broker, on Twisted."""

import re

from setuptools import find_namespace_packages, setup

with open("orbited/__init__.py") as handle:
    VERSION = re.search(r'__version__ = "([^"]+)"', handle.read()).group(1)

setup(
    name="orbited",
    version=VERSION,
    description="Comet push server: browser TCPSockets to TCP backends, plus a STOMP broker",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    # namespace packages: the data directories under orbited/static are packages to setuptools too
    packages=find_namespace_packages(include=["orbited", "orbited.*"]),
    include_package_data=True,
    package_data={"orbited": ["static/*", "static/**/*"]},
    install_requires=[
        "Twisted>=24.3",
        "autobahn>=24.4",
        "zope.interface>=6",
        "pyOpenSSL>=24.3",  # takes cryptography keys and certificates (its own are deprecated)
        "cryptography>=41",  # orbited/service.py reads the [ssl] key and chain with it
        "service_identity>=24",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout",
            "hypothesis>=6",
            "websockets>=13",
            "stomp.py>=8",
            "irc>=20",
            "slixmpp>=1.8",
            "selenium>=4.20",
            "cryptography",
            "kosoku",
            "ruff==0.17.6",
        ],
        # `make bench`: the plots of docs/performance.md (the peers install themselves under bench/.work).
        "bench": ["matplotlib>=3.8", "uvloop>=0.19"],
    },
    entry_points={"console_scripts": ["orbited = orbited.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Twisted",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
    ],
)
