#!/usr/bin/env python3
"""Fails when a doctest case name holds a ';'.

doctest_discover_tests hands ctest a list separated by ';', so such a name becomes two
ctest entries that run nothing and pass: the test silently stops running."""
import glob
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
bad = []
for path in sorted(glob.glob(os.path.join(root, "**", "*.cpp"), recursive=True)):
    text = open(path, encoding="utf-8").read()
    for m in re.finditer(r'(TEST_CASE(?:_TEMPLATE)?|SUBCASE)\(\s*((?:"[^"]*"\s*)+)', text):
        name = "".join(re.findall(r'"([^"]*)"', m.group(2)))
        if ";" in name and m.group(1) != "SUBCASE":
            line = text.count("\n", 0, m.start()) + 1
            bad.append(f"{os.path.relpath(path, root)}:{line}: {name}")
for b in bad:
    print(f"test name with ';' (ctest splits it and runs nothing): {b}")
print(f"{len(bad)} bad test names")
sys.exit(1 if bad else 0)
