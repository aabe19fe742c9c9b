"""Tests of annofree.evaluation (a package, so that these module names never clash with other rooms' tests)."""
