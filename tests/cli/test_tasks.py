"""Tests of scripts/gen-tasks, the seeded generator of short reasoning problems with checkable answers.

Every answer is recomputed here independently of the generator: each question's text is parsed with
this file's own regexes and solved (the word problem's steps summed, the units converted by this
file's table, the order built from the facts, the equation solved), for 200 problems of every family
and level; each sentence must be one this file knows, so a new phrasing fails until it is checked
here. Also checked: the schema of the records, the difficulty limits of each level, that the same
arguments give the same bytes, --levels, --exclude, and that bad input exits non-zero with a message
naming the problem. Needs no model and no dms binary.

Run: python tests/cli/test_tasks.py
"""
import json
import os
import re
import sys
import tempfile
import unittest
from collections import Counter
from fractions import Fraction

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, read_jsonl, run  # noqa: E402

SCRIPT = os.path.join(ROOT, "scripts", "gen-tasks")
FAMILIES = ["arithmetic", "conversion", "ordering", "algebra"]
KEYS = ["id", "family", "level", "split", "question", "answer"]
NUMBER = re.compile(r"0|[1-9][0-9]*")
PER_LEVEL = 200

# unit: (what it measures, its size in the smallest unit of that)
UNITS = {"seconds": ("time", 1), "minutes": ("time", 60), "hours": ("time", 3600), "days": ("time", 86400),
         "weeks": ("time", 7 * 86400), "months": ("calendar", 1), "years": ("calendar", 12),
         "decades": ("calendar", 120), "centuries": ("calendar", 1200), "millimeters": ("length", 1),
         "centimeters": ("length", 10), "meters": ("length", 1000), "kilometers": ("length", 1000000),
         "inches": ("imperial", 1), "feet": ("imperial", 12), "yards": ("imperial", 36), "grams": ("mass", 1),
         "kilograms": ("mass", 1000), "milliliters": ("volume", 1), "liters": ("volume", 1000)}
IRREGULAR = {"foot": "feet", "inch": "inches", "century": "centuries"}

# comparative or superlative: (its scale, +1 for more, -1 for less)
SCALE = {}
for words in (("taller", "tallest", "shorter", "shortest"), ("older", "oldest", "younger", "youngest"),
              ("faster", "fastest", "slower", "slowest"), ("heavier", "heaviest", "lighter", "lightest"),
              ("larger", "largest", "smaller", "smallest")):
    for i, w in enumerate(words):
        SCALE[w] = (words[0], 1 if i < 2 else -1)


def sentences(text):
    parts = re.findall(r"[^.?]+[.?]", text)
    assert "".join(parts) == text, text
    return [p.strip() for p in parts]


def names_listed(text):
    """["A", "B", "C"] of "A, B or C"."""
    *head, last = text.split(" or ")
    assert len(head) == 1, text
    return head[0].split(", ") + [last]


def solve_arithmetic(q, level):
    first, *steps, last = sentences(q)
    m = re.fullmatch(r"(\w+) has (\d+) boxes with (\d+) (\w+) in each box\.", first)
    if m:
        name, total, obj = m[1], int(m[2]) * int(m[3]), m[4]
        assert level == 3 and len(steps) <= 1, q
    else:
        m = re.fullmatch(r"(\w+) has (\d+) (\w+)\.", first)
        assert m, q
        name, total, obj = m[1], int(m[2]), m[3]
        assert len(steps) == level, q
    for s in steps:
        add = (re.fullmatch(r"(?:He|She) (?:buys|finds) (\d+) more (\w+)\.", s)
               or re.fullmatch(r"\w+ gives (?:him|her) (\d+) more (\w+)\.", s))
        take = (re.fullmatch(r"(?:He|She) gives (\d+) (\w+) to \w+\.", s)
                or re.fullmatch(r"(?:He|She) loses (\d+) (\w+)\.", s))
        assert add or take, s
        n, thing = (add or take)[1], (add or take)[2]
        assert thing == obj, q
        total += int(n) if add else -int(n)
        assert total > 0, q
    assert last == f"How many {obj} does {name} have now?", q
    return str(total)


def unit(word, n):
    """The plural of a unit named in the question, checking singular is used for 1 and only for 1."""
    plural = word if word in UNITS else IRREGULAR.get(word, word + "s")
    assert plural in UNITS and (word != plural) == (n == 1), (word, n)
    return plural


def solve_conversion(q, level):
    (s,) = sentences(q)
    m = (re.fullmatch(r"How many (?P<u>\w+) are in (?P<q>.+)\?", s)
         or re.fullmatch(r"(?P<q>.+) is how many (?P<u>\w+)\?", s)
         or re.fullmatch(r"Convert (?P<q>.+) to (?P<u>\w+)\.", s))
    assert m, q
    target = m["u"]
    amounts = [re.fullmatch(r"(\d+) (\w+)", part) for part in m["q"].split(" and ")]
    assert all(amounts), q
    amounts = [(int(a[1]), unit(a[2], int(a[1]))) for a in amounts]
    kinds = {UNITS[u][0] for _, u in amounts} | {UNITS[target][0]}
    assert len(kinds) == 1, q
    units = [u for _, u in amounts]
    if level == 1:
        assert len(amounts) == 1 and UNITS[units[0]][1] > UNITS[target][1], q
    elif level == 2:
        assert len(amounts) == 2 and units[1] == target, q
    else:
        assert target not in units and len(amounts) <= 2, q
    for (n, u), bigger in zip(amounts[1:], amounts):  # the smaller unit comes second, and less than one bigger
        assert UNITS[u][1] < UNITS[bigger[1]][1] and n * UNITS[u][1] < UNITS[bigger[1]][1], q
    value = Fraction(sum(n * UNITS[u][1] for n, u in amounts), UNITS[target][1])
    assert value.denominator == 1 and value > 0, q
    return str(value.numerator)


def solve_ordering(q, level):
    *facts, ask = sentences(q)
    m = re.fullmatch(r"Which number is (?:the )?(\w+): (.+)\?", ask)
    if m:
        assert not facts, q
        nums = [int(n) for n in names_listed(m[2])]
        assert len(nums) == level + 1 and len(set(nums)) == len(nums), q
        return str((max if SCALE[m[1]][1] > 0 else min)(nums)), names_listed(m[2])
    m = re.fullmatch(r"Who is (the )?(\w+): (.+)\?", ask)
    assert m and bool(m[1]) == (level > 1), q
    scale, direction = SCALE[m[2]]
    people = names_listed(m[3])
    assert len(people) == level + 1 == len(set(people)) and len(facts) == level, q
    above = {p: set() for p in people}  # who is known to be more than whom
    for f in facts:
        a, word, b = re.fullmatch(r"(\w+) is (\w+) than (\w+)\.", f).groups()
        assert a in people and b in people and SCALE[word][0] == scale, q
        more, less = (a, b) if SCALE[word][1] > 0 else (b, a)
        above[less].add(more)
    for _ in people:  # transitive closure
        for p in people:
            above[p] |= set().union(*(above[o] for o in above[p]))
    if direction > 0:
        found = [p for p in people if all(p in above[o] for o in people if o != p)]
    else:
        found = [p for p in people if all(o in above[p] for o in people if o != p)]
    assert len(found) == 1, q
    return found[0], people


def solve_algebra(q, level):
    (s,) = sentences(q)
    m = re.fullmatch(r"Solve for (\w): (\d*)(\w)(?: ([+-]) (\d+))? = (\d+)\.", s)
    assert m and m[1] == m[3], q
    a, b, c = int(m[2] or 1), int(m[5] or 0) * (-1 if m[4] == "-" else 1), int(m[6])
    assert (bool(m[2]), bool(m[4])) == {1: (False, True), 2: (True, False), 3: (True, True)}[level], q
    assert not m[2] or a > 1, q
    x = Fraction(c - b, a)
    assert x.denominator == 1 and x >= 0, q
    return str(x.numerator)


def gen(*args):
    return run([sys.executable, SCRIPT, *args])


class GenTasks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.all = cls.generate("all.jsonl", "--split", "calibration", "--seed", "1", "--per-level", str(PER_LEVEL))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    @classmethod
    def path(cls, name):
        return os.path.join(cls.tmp.name, name)

    @classmethod
    def generate(cls, name, *args):
        r = gen(cls.path(name), *args)
        if r.returncode != 0:
            raise AssertionError(f"gen-tasks {args} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return read_jsonl(cls.path(name))

    def test_every_answer_is_right_by_an_independent_computation(self):
        counts = Counter((r["family"], r["level"]) for r in self.all)
        self.assertEqual(counts, Counter({(f, lv): PER_LEVEL for f in FAMILIES for lv in (1, 2, 3)}))
        for r in self.all:
            q, level = r["question"], r["level"]
            body = q
            with self.subTest(id=r["id"]):
                if r["family"] == "ordering":
                    answer, choices = solve_ordering(body, level)
                    self.assertEqual(r["choices"], choices)
                else:
                    answer = {"arithmetic": solve_arithmetic, "conversion": solve_conversion,
                              "algebra": solve_algebra}[r["family"]](body, level)
                self.assertEqual(r["answer"], answer, q)

    def test_levels_keep_their_number_limits(self):
        for r in self.all:
            numbers = [int(n) for n in re.findall(r"\d+", r["question"])]
            self.assertLess(max(numbers, default=0), 20 if r["level"] == 1 else 100, r["question"])

    def test_schema(self):
        self.assertEqual(len({r["id"] for r in self.all}), len(self.all))
        self.assertEqual(len({r["question"] for r in self.all}), len(self.all))
        for r in self.all:
            with self.subTest(id=r["id"]):
                self.assertEqual(list(r)[:6], KEYS)
                self.assertIn(r["family"], FAMILIES)
                self.assertIn(r["level"], (1, 2, 3))
                self.assertIs(type(r["level"]), int)
                self.assertEqual(r["split"], "calibration")
                self.assertRegex(r["id"], rf"^{r['family']}-{r['level']}-calibration-\d{{4}}$")
                self.assertIsInstance(r["question"], str)
                self.assertIsInstance(r["answer"], str)
                if "choices" in r:
                    self.assertEqual(list(r), KEYS + ["choices"])
                    self.assertEqual(r["family"], "ordering")
                    self.assertTrue(all(isinstance(c, str) and c in r["question"] for c in r["choices"]))
                    self.assertIn(r["answer"], r["choices"])
                else:
                    self.assertEqual(list(r), KEYS)
                    self.assertRegex(r["answer"], NUMBER)
                    self.assertTrue(NUMBER.fullmatch(r["answer"]), r["answer"])
        with open(self.path("all.jsonl"), encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertEqual(lines, [json.dumps(r, ensure_ascii=False) for r in self.all])

    def test_same_arguments_same_bytes_and_other_seeds_other_problems(self):
        args = ["--split", "test", "--seed", "5", "--per-level", "20"]
        outs = {}
        for name, extra in (("a", []), ("b", []), ("seed", ["--seed", "6"]), ("split", ["--split", "calibration"])):
            self.generate(name + ".jsonl", *args, *extra)
            with open(self.path(name + ".jsonl"), "rb") as f:
                outs[name] = f.read()
        self.assertEqual(outs["a"], outs["b"])
        questions = {k: [json.loads(line)["question"] for line in v.splitlines()] for k, v in outs.items()}
        for other in ("seed", "split"):
            shared = set(questions["a"]) & set(questions[other])
            self.assertLess(len(shared), len(questions["a"]) // 4, other)

    def test_levels_restricts_and_leaves_each_stream_alone(self):
        some = self.generate("some.jsonl", "--split", "calibration", "--seed", "1", "--per-level", str(PER_LEVEL),
                             "--levels", "arithmetic=1,3", "--levels", "algebra")
        chosen = {("arithmetic", 1), ("arithmetic", 3), ("algebra", 1), ("algebra", 2), ("algebra", 3)}
        self.assertEqual(some, [r for r in self.all if (r["family"], r["level"]) in chosen])

    def test_exclude_keeps_out_the_questions_of_another_file(self):
        calibration = self.generate("cal.jsonl", "--split", "calibration", "--seed", "3", "--per-level", "100")
        test = self.generate("test.jsonl", "--split", "test", "--seed", "3", "--per-level", "100",
                             "--exclude", self.path("cal.jsonl"))
        self.assertEqual(len(test), len(calibration))
        self.assertFalse({r["question"] for r in calibration} & {r["question"] for r in test})
        self.assertTrue(all(r["split"] == "test" and "-test-" in r["id"] for r in test))
        again = self.generate("again.jsonl", "--split", "calibration", "--seed", "3", "--per-level", "100",
                              "--exclude", self.path("cal.jsonl"))
        self.assertFalse({r["question"] for r in calibration} & {r["question"] for r in again})


class GenTasksBadInput(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def test_errors_exit_non_zero_naming_the_problem(self):
        good = json.dumps({"question": "What is 1 + 1?"})
        for name, content in (("malformed.jsonl", good + "\n{\"question\": \n"),
                              ("no_question.jsonl", json.dumps({"prompt": "hi"}) + "\n"),
                              ("not_text.jsonl", good + "\n\n" + json.dumps({"question": 3}) + "\n")):
            with open(self.path(name), "w") as f:
                f.write(content)
        out = self.path("out.jsonl")
        base = ["--split", "test", "--seed", "1", "--per-level", "2"]
        cases = [
            ([*base, "--levels", "geometry=1"], "unknown family 'geometry'"),
            ([*base, "--levels", "arithmetic=4"], "unknown level '4' of arithmetic"),
            ([*base, "--levels", "ordering=1,x"], "unknown level 'x' of ordering"),
            ([*base, "--levels", "algebra="], "unknown level '' of algebra"),
            (["--split", "test", "--seed", "1", "--per-level", "0"], "--per-level must be at least 1"),
            ([*base, "--exclude", self.path("absent.jsonl")], "absent.jsonl: cannot read"),
            ([*base, "--exclude", self.path("malformed.jsonl")], "malformed.jsonl:2: not a gen-tasks record"),
            ([*base, "--exclude", self.path("no_question.jsonl")], "no_question.jsonl:1: not a gen-tasks record"),
            ([*base, "--exclude", self.path("not_text.jsonl")], "not_text.jsonl:3: not a gen-tasks record"),
            (["--split", "test", "--seed", "1", "--per-level", "5000", "--levels", "algebra=2"],
             "algebra level 2: found only"),
        ]
        for args, words in cases:
            r = gen(out, *args)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertTrue(r.stderr.startswith("gen-tasks: "), f"{args}: {r.stderr}")
            self.assertIn(words, r.stderr, args)
            self.assertFalse(os.path.exists(out), f"{args}: wrote its output")
        r = gen(self.path("absent/out.jsonl"), *base)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("out.jsonl: cannot write", r.stderr)
        r = gen(out, "--split", "train", "--seed", "1", "--per-level", "2")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--split", r.stderr)


if __name__ == "__main__":
    unittest.main()
