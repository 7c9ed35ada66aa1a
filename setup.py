"""Build the optional C extension ``tether._speedups``.

All project metadata lives in pyproject.toml; this file only declares the
extension. It is optional: without a working C compiler (or without the
Python headers) the install still succeeds, with a warning, and tether runs
on the pure-Python twins in ``tether.protocol.frames``.

``pip install -e .`` builds the extension in place, next to its source:
``src/tether/_speedups.<abi tag>.so``.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Flags for gcc and clang. No -march=native: the wheel must run on any
# machine of the same architecture. SSE2 is the x86_64 baseline; the AVX2
# kernel is compiled with a target attribute and chosen at run time.
UNIX_CFLAGS = ["-O3", "-Wall", "-fvisibility=hidden"]
MSVC_CFLAGS = ["/O2", "/W3"]


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the extension can't build."""

    def build_extensions(self) -> None:
        flags = MSVC_CFLAGS if self.compiler.compiler_type == "msvc" else UNIX_CFLAGS
        for ext in self.extensions:
            ext.extra_compile_args = [*flags, *ext.extra_compile_args]
        super().build_extensions()

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all, broken toolchain...
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc: BaseException) -> None:
        print(
            "WARNING: a C extension of tether could not be built "
            f"({type(exc).__name__}: {exc}); tether will use the pure-Python "
            "hot path, which is slower.",
            file=sys.stderr,
        )


ext_modules = []
# The extension uses the CPython C API; other implementations (PyPy) run the
# pure-Python twins, which their JIT handles well.
if sys.implementation.name == "cpython":
    ext_modules.append(
        Extension(
            "tether._speedups",
            sources=[
                "src/tether/_speedups.c",
                "src/tether/_speedups_connection.c",
                "src/tether/_speedups_waiter.c",
                "src/tether/_speedups_operation.c",
            ],
            depends=["src/tether/_speedups.h"],
            optional=True,
        )
    )
    if sys.platform.startswith("linux"):
        # Compiled transports over epoll (tether/aio/transports.py uses them
        # on asyncio's selector loop; elsewhere asyncio's own ones).
        ext_modules.append(
            Extension(
                "tether._transport",
                sources=["src/tether/_transport.c"],
                optional=True,
            )
        )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
