#!/usr/bin/env python3
"""Generates src/io/unicode_tables.inc: the Unicode facts the tokenizer and OFA's text
preprocessing need, as compact sorted range tables.

  python3 tools/gen_unicode_tables.py > src/io/unicode_tables.inc

Everything comes from this Python's own `unicodedata` and `str` methods (stdlib only), so the
C++ side reproduces exactly what the Python reference does on the same Unicode version:

  letters        General_Category L*  (GPT-2's \\p{L})
  numbers        General_Category N*  (GPT-2's \\p{N})
  white_space    the White_Space property, which is what \\s means in the `regex` module that
                 GPT-2's encoder uses (not str.isspace: U+001C..U+001F are not White_Space).
                 The property is not exposed by the stdlib, so it is listed here from
                 PropertyList.txt (stable since Unicode 6.3) and checked against str.isspace.
  python_space   str.isspace(), which is \\s in Python's `re` on str patterns (OFA's pre_caption).
  lower          str.lower() of each code point alone (full case mapping, so U+0130 maps to two
                 code points); the one context rule, Final_Sigma, needs the next two tables.
  case_ignorable / cased
                 Python's Case_Ignorable and Cased as str.lower() uses them for Final_Sigma,
                 recovered by probing str.lower() itself (see final_sigma_probes below).
"""

import sys
import unicodedata

MAX_CODE_POINT = 0x10FFFF

# PropertyList.txt, White_Space (Unicode 6.3 and later).
WHITE_SPACE = (
    list(range(0x0009, 0x000D + 1)) + [0x0020, 0x0085, 0x00A0, 0x1680] +
    list(range(0x2000, 0x200A + 1)) + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000])


def ranges_of(predicate):
    """Sorted inclusive [first, last] ranges of the code points where predicate holds."""
    ranges = []
    start = None
    for cp in range(MAX_CODE_POINT + 2):
        inside = cp <= MAX_CODE_POINT and predicate(cp)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            ranges.append((start, cp - 1))
            start = None
    return ranges


def final_sigma_probes(cp):
    """Returns (case_ignorable, cased) for cp as CPython's str.lower() sees them.

    CPython lowers U+03A3 to final sigma when it is preceded by a cased character (skipping
    case-ignorable ones) and not followed by one. Three probes recover the two properties:
      alone  = lower(c + Σ) is final   <=>  not ignorable(c) and cased(c)
      after  = lower(A + c + Σ) final  <=>  ignorable(c) or cased(c)
      before = lower(A + Σ + c) final  <=>  ignorable(c) or not cased(c)
    so ignorable = after and before; for a non-ignorable c, cased = alone. Whether an ignorable
    character is cased never matters to the rule, so `cased` is reported only for
    non-ignorable characters.
    """
    c = chr(cp)
    alone = ("" + c + "\u03a3").lower()[-1] == "\u03c2"
    after = ("A" + c + "\u03a3").lower()[-1] == "\u03c2"
    before = ("A\u03a3" + c).lower()[1] == "\u03c2"
    ignorable = after and before
    return ignorable, (alone and not ignorable)


def lower_tables():
    """Single-code-point lowercase mappings as runs, plus the multi-code-point ones."""
    single = []
    multi = []
    for cp in range(MAX_CODE_POINT + 1):
        low = chr(cp).lower()
        if low == chr(cp):
            continue
        if len(low) == 1:
            single.append((cp, ord(low) - cp))
        else:
            multi.append((cp, [ord(ch) for ch in low]))
    # Runs: first, last, delta, stride; a run covers first, first+stride, ..., last.
    runs = []
    for cp, delta in single:
        if runs:
            first, last, run_delta, stride = runs[-1]
            step = cp - last
            if run_delta == delta and (step == stride or (first == last and step in (1, 2))):
                runs[-1] = (first, cp, delta, step)
                continue
        runs.append((cp, cp, delta, 1))
    return runs, multi


def emit_ranges(name, ranges, out):
    out.append(f"constexpr CodePointRange {name}[] = {{")
    line = " "
    for first, last in ranges:
        item = f" {{0x{first:X}, 0x{last:X}}},"
        if len(line) + len(item) > 99:
            out.append(line)
            line = " "
        line += item
    out.append(line)
    out.append("};")
    out.append("")


def main():
    for cp in WHITE_SPACE:
        assert chr(cp).isspace(), f"U+{cp:04X} is White_Space but not str.isspace()"

    letters = ranges_of(lambda cp: unicodedata.category(chr(cp))[0] == "L")
    numbers = ranges_of(lambda cp: unicodedata.category(chr(cp))[0] == "N")
    white_space_set = set(WHITE_SPACE)
    white_space = ranges_of(lambda cp: cp in white_space_set)
    python_space = ranges_of(lambda cp: chr(cp).isspace())
    probes = [final_sigma_probes(cp) for cp in range(MAX_CODE_POINT + 1)]
    case_ignorable = ranges_of(lambda cp: probes[cp][0])
    cased = ranges_of(lambda cp: probes[cp][1])
    runs, multi = lower_tables()
    assert all(len(m) <= 3 for _, m in multi)

    out = [
        "// Generated by tools/gen_unicode_tables.py; do not edit.",
        f"// Python {sys.version.split()[0]}, unicodedata {unicodedata.unidata_version}.",
        "// Included by src/io/unicode.cpp inside namespace mue::unicode::{anonymous}.",
        "",
        f'constexpr const char* kTablesUnicodeVersion = "{unicodedata.unidata_version}";',
        "",
    ]
    emit_ranges("kLetterRanges", letters, out)
    emit_ranges("kNumberRanges", numbers, out)
    emit_ranges("kWhiteSpaceRanges", white_space, out)
    emit_ranges("kPythonSpaceRanges", python_space, out)
    emit_ranges("kCaseIgnorableRanges", case_ignorable, out)
    emit_ranges("kCasedRanges", cased, out)
    out.append("constexpr LowerRun kLowerRuns[] = {")
    for first, last, delta, stride in runs:
        out.append(f"    {{0x{first:X}, 0x{last:X}, {delta}, {stride}}},")
    out.append("};")
    out.append("")
    out.append("constexpr LowerSpecial kLowerSpecials[] = {")
    for cp, low in multi:
        padded = low + [0] * (3 - len(low))
        items = ", ".join(f"0x{c:X}" for c in padded)
        out.append(f"    {{0x{cp:X}, {len(low)}, {{{items}}}}},")
    out.append("};")
    print("\n".join(out))


if __name__ == "__main__":
    main()
