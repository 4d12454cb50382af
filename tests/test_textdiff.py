"""review.textdiff: difflib's unified diff, hunk for hunk, whatever the two texts."""

from __future__ import annotations

import difflib

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SEED
from fwmatrix.compile.intent import build_intent
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.review.textdiff import unified
from fwmatrix.targets import BACKENDS, backend


def difflib_unified(before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True), "a/x", "b/x"))


@st.composite
def edited_texts(draw: st.DrawFn) -> tuple[str, str]:
    """A text of lines from a few words (so that lines repeat, and past 200 lines some are too
    common for difflib's index), and an edit of it: lines deleted, inserted, replaced, blocks
    moved and copied; either may lack its last newline."""
    least, most = draw(st.sampled_from([(0, 12), (0, 60), (200, 400)]))
    # few words: lines too common for difflib's index; as many as a quarter of the lines: each
    # line a few times, pairs of equal lines outnumbering the lines (the matcher's dense ranges)
    words = draw(st.one_of(st.integers(1, 40), st.just(max(1, most // 4))))
    line = st.integers(0, words - 1).map(lambda k: f"line {k}\n")
    before = draw(st.lists(line, min_size=least, max_size=most))
    after = list(before)
    for _ in range(draw(st.integers(0, 12))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "move", "copy"]))
        at = draw(st.integers(0, len(after)))
        if op == "insert":
            after.insert(at, draw(line))
        elif op in ("delete", "replace") and at < len(after):
            after[at : at + 1] = [] if op == "delete" else [f"new {draw(line)}"]
        elif op in ("move", "copy") and after:
            first = draw(st.integers(0, len(after) - 1))
            block = after[first : first + draw(st.integers(1, 30))]
            if op == "move":
                del after[first : first + len(block)]
                at = min(at, len(after))
            after[at:at] = block
    texts = ["".join(before), "".join(after)]
    for k in range(2):
        if texts[k] and draw(st.booleans()):
            texts[k] = texts[k][:-1]
    return texts[0], texts[1]


@settings(max_examples=400, deadline=None)
@given(edited_texts())
def test_an_edit_gives_difflibs_hunks(texts: tuple[str, str]) -> None:
    before, after = texts
    assert unified(before, after, "a/x", "b/x") == difflib_unified(before, after)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("abc"), max_size=300), st.lists(st.sampled_from("abcd"), min_size=200, max_size=300))
def test_two_unrelated_texts_give_difflibs_hunks(before: list[str], after: list[str]) -> None:
    before_text, after_text = "\n".join(before), "\n".join(after)
    assert unified(before_text, after_text, "a/x", "b/x") == difflib_unified(before_text, after_text)


def test_the_rulesets_of_a_changed_matrix_give_difflibs_hunks(write_matrix) -> None:
    text = SEED.read_text()
    changed = text.replace("  sip-and-tls: [udp/5060, tcp/5060, tcp/5061]", "  sip-and-tls: [udp/5060, tcp/5061, tcp/5062]")
    assert changed != text
    old = compile_intent(build_intent(load_matrix(write_matrix(text, "old.yaml"))))
    new = compile_intent(build_intent(load_matrix(write_matrix(changed, "new.yaml"))))
    for name in BACKENDS:
        module = backend(name)
        for firewall, ruleset in old.items():
            before, after = module.render_files(ruleset), module.render_files(new[firewall])
            for suffix in before:
                assert unified(before[suffix], after[suffix], "a/x", "b/x") == difflib_unified(before[suffix], after[suffix])
            assert any(before[suffix] != after[suffix] for suffix in before)


def test_a_run_of_repeated_lines_as_long_as_the_others_and_first_is_difflibs_block() -> None:
    # 'r' is twice in the new text, 'u' once: difflib's block is the first 'r', found by its scan
    before, after = "r\nu\n", "u\nr\nx\nr\n"
    assert unified(before, after, "a/x", "b/x") == difflib_unified(before, after)
    assert unified(before, after, "a/x", "b/x").splitlines()[3:] == ["+u", " r", "-u", "+x", "+r"]
