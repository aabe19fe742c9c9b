"""Tests of annofree.engine (a package, so that these module names never clash with other rooms' tests)."""
