"""Test suite; mirrors the source tree. A package, so test folders never shadow the project packages."""
