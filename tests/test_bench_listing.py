"""The audit benchmark's naive listings, written without a kernel (bench/naive_listing.py),
are what the kernel lists after loading the naive rulesets (bench/naive_ruleset.py)."""

from __future__ import annotations

import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import gen_matrix  # noqa: E402
import naive_ruleset  # noqa: E402


@pytest.mark.kernel
def test_generated_listings_are_the_kernels(tmp_path):
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(gen_matrix.generate(400, seed=3, firewalls=1))
    problems = naive_ruleset.verify(str(matrix), "edge", ("nft", "ipt"), str(tmp_path / "cache"), timeout=300)
    assert problems == []


def test_the_set_quirk_is_only_a_split_of_one_set():
    from naive_listing import same_sets

    split = {"set": [{"range": ["10.0.0.1", "10.0.0.2"]}, "10.0.0.9"]}
    apart = {"set": ["10.0.0.1", "10.0.0.2", "10.0.0.9"]}
    other = {"set": ["10.0.0.1", "10.0.0.3", "10.0.0.9"]}
    assert same_sets(split) == same_sets(apart)
    assert same_sets(split) != same_sets(other)
