r"""Final answers in free-form responses: the last `\boxed{}` / `\fbox{}`, else "The answer is X", else the text
after the last "####" (GSM8K). Pure string work, linear in the response's length, never raises on any str; the
equivalence of two answers is `dapo.graders.math`'s job."""

from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])[ \t]*")
_BARE_BOX_RE = re.compile(r"[^\s${}]+")  # `\boxed 5`
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)  # an escaped character (`\{`, `\\`) or a brace
_ANSWER_IS_RE = re.compile(r"\banswer\s*(?:is\b|:)\s*:?", re.IGNORECASE)
DELIMITED_RE = re.compile(r"\$+([^$]+?)\$+|\\[(\[](.+?)\\[)\]]", re.DOTALL)  # `$x$`, `$$x$$`, `\(x\)`, `\[x\]`
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")


def extract_answer(response: str) -> str | None:
    r"""The final answer of a response: the content of its last non-empty `\boxed{...}` or `\fbox{...}` (nested
    braces kept, `\boxed 5` too), else what follows its last "answer is" / "answer:" (to the end of that line or
    sentence, without `$` or `**` around it), else the rest of the line after its last "####". None if none."""
    return last_boxed(response) or _after_answer_is(response) or _after_hashes(response)


def last_boxed(text: str) -> str | None:
    boxes = list(_BOX_RE.finditer(text))
    if not boxes:
        return None
    partners = _brace_partners(text, boxes[0].start())
    for box in reversed(boxes):
        content = _box_content(text, box.end(), partners)
        if content:
            return content
    return None


def _brace_partners(text: str, start: int) -> dict[int, int]:
    """Index of each `{` in `text[start:]` -> index of its matching `}` (one linear pass; unmatched are absent)."""
    partners: dict[int, int] = {}
    open_braces: list[int] = []
    for token in _BRACE_TOKEN_RE.finditer(text, start):
        if token.group() == "{":
            open_braces.append(token.start())
        elif token.group() == "}" and open_braces:
            partners[open_braces.pop()] = token.start()
    return partners


def _box_content(text: str, position: int, partners: dict[int, int]) -> str | None:
    if text.startswith("{", position):
        end = partners.get(position)
        return None if end is None else text[position + 1 : end].strip()
    bare = _BARE_BOX_RE.match(text, position)
    return bare.group().rstrip(".") if bare else None


def _after_answer_is(text: str) -> str | None:
    for match in reversed(list(_ANSWER_IS_RE.finditer(text))):
        answer = _clean_inline(text[match.end() :].split("\n", 1)[0])
        if answer:
            return answer
    return None


def _after_hashes(text: str) -> str | None:
    position = text.rfind("####")
    if position < 0:
        return None
    return _clean_inline(text[position + 4 :].split("\n", 1)[0]) or None


# A number (optionally "$"-prefixed, with thousands commas or decimals, or a percent) followed by words: units or
# an explanation, which are not part of the answer. "1, 2, 3" (a list) does not match: a digit follows the comma.
_NUMBER_THEN_WORDS_RE = re.compile(
    r"\\?\$?\s*(?P<number>-?\d(?:[\d,]*\d)?(?:\.\d+)?)\s*(?P<percent>\\?%)?(?=\s+[A-Za-z]|,\s*[A-Za-z])"
)


def _clean_inline(line: str) -> str:
    """The answer at the start of `line`: inside `$...$` (or `\\(...\\)`) if it starts so, else a number followed by
    words ("28 stickers", "18, since ..."), else up to the end of its sentence; without markdown bold or a
    trailing period."""
    line = line.strip().replace("**", "")
    delimited = DELIMITED_RE.match(line)
    if delimited:
        return delimited_content(delimited).strip().rstrip(".").strip()
    number = _NUMBER_THEN_WORDS_RE.match(line)
    if number:
        return number.group("number") + (number.group("percent") or "")
    return _SENTENCE_END_RE.split(line, 1)[0].strip().rstrip(".").strip()


def delimited_content(match: re.Match[str]) -> str:
    return match.group(1) or match.group(2) or ""


_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def canonical_answer(response: str) -> str | None:
    r"""The response's final answer (`extract_answer`) as a key two equal answers share: without spaces, dollar
    signs, thousands commas and a closing period, and numbers without trailing zeros ("1,000.50" -> "1000.5",
    "\$18" -> "18"). Forms only a grader can match ("1/2" and "0.5") stay different. None if there is no answer."""
    answer = extract_answer(response) if isinstance(response, str) else None
    if answer is None:
        return None
    key = "".join(answer.split()).replace("\\$", "").replace("$", "").rstrip(".")
    plain = re.sub(r"(?<=\d),(?=\d{3})", "", key)
    if _NUMBER_RE.fullmatch(plain):
        return f"{float(plain):.10g}" if "." in plain else str(int(plain))
    return key or None
