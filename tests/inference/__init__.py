"""Tests of annofree.inference (a package, so that these module names never clash with other rooms' tests)."""
