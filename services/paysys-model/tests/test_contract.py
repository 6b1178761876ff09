"""The package and the Rust side share one contract; nothing names a fraud pattern."""

import os
import re

from conftest import PACKAGE_DIR, REPO
from paysys_model.contract import FEATURE_NAMES, FEATURES_VERSION

RUST_FEATURES = os.path.join(REPO, "services", "paysys-core", "src", "features.rs")

# The names the traffic simulator gives its planted patterns, and their usual spellings: the
# training code must learn them from generic features, never be told about them.
PATTERN_NAMES = [
    r"card[\s_-]*test", r"take[\s_-]*over", r"\bato\b", r"\brings?\b", r"fraud[\s_-]*ring",
    r"\bmules?\b", r"bust[\s_-]*out", r"friendly[\s_-]*fraud", r"enumeration", r"\bburst",
]


def rust_source():
    with open(RUST_FEATURES, encoding="utf-8") as f:
        return f.read()


def test_features_version_is_the_rust_one():
    match = re.search(r'pub const FEATURES_VERSION: &str = "([^"]*)";', rust_source())
    assert match, f"FEATURES_VERSION not found in {RUST_FEATURES}"
    assert FEATURES_VERSION == match.group(1)


def test_feature_names_are_the_rust_ones_in_order():
    match = re.search(r"pub const FEATURE_NAMES: \[&str; FEATURE_COUNT\] = \[(.*?)\];",
                      rust_source(), re.S)
    assert match, f"FEATURE_NAMES not found in {RUST_FEATURES}"
    assert list(FEATURE_NAMES) == re.findall(r'"([^"]+)"', match.group(1))


def package_sources():
    for folder in ("paysys_model", "spark"):
        for root, _, names in os.walk(os.path.join(PACKAGE_DIR, folder)):
            for name in names:
                if name.endswith(".py"):
                    yield os.path.join(root, name)


def test_no_pattern_specific_name_anywhere_in_the_package():
    sources = list(package_sources())
    assert len(sources) >= 8, sources
    found = []
    for path in sources:
        with open(path, encoding="utf-8") as f:
            text = f.read().lower()
        found += [(os.path.relpath(path, PACKAGE_DIR), p) for p in PATTERN_NAMES
                  if re.search(p, text)]
    assert found == []


def test_the_pattern_check_would_see_a_pattern_name():
    # The check above must be able to fail: the patterns match their usual spellings.
    samples = ["card_testing", "account takeover", "a ring of payers", "mule", "ATO"]
    for sample in samples:
        assert any(re.search(p, sample.lower()) for p in PATTERN_NAMES), sample
