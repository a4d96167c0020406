"""How well Meldbot reads a story: per kind and for places, precision and recall of the
pre-selection on a labelled corpus, and the share of stories whose pre-selection is entirely right.

Usage: python bench/understanding.py [--corpus FILE ...] [--show N]
Default corpus: tests/corpus/stories.*.jsonl (written by us; a held-out corpus judges generalisation).
Targets: >= 95% of stories with every kind right and nothing wrong; >= 95% with the right place
(where the story names one).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dialogs.categories import KINDS, PLACES  # noqa: E402
from dialogs.understanding import read  # noqa: E402


def load(paths: list[Path]) -> list[dict]:
    stories = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                story = json.loads(line)
                story.setdefault("id", f"{path.name}:{number}")
                stories.append(story)
    return stories


def ratio(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "   n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, nargs="*", default=sorted((ROOT / "tests" / "corpus").glob("stories.*.jsonl")))
    parser.add_argument("--show", type=int, default=0, help="print this many wrong stories with what matched")
    args = parser.parse_args()
    stories = load(args.corpus)
    read("warm up the lemmatiser")
    started = time.perf_counter()
    readings = [read(story["text"]) for story in stories]
    elapsed = time.perf_counter() - started

    tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
    confusions = collections.Counter()
    exact = place_right = place_named = place_invented = perpetrator_right = perpetrator_named = 0
    wrong = []
    for story, reading in zip(stories, readings):
        want, got = set(story["kinds"]), set(reading.kinds)
        for kind in KINDS:
            if kind in want and kind in got:
                tp[kind] += 1
            elif kind in got:
                fp[kind] += 1
            elif kind in want:
                fn[kind] += 1
        for missing in want - got:
            for extra in (got - want) or {"(none)"}:
                confusions[(missing, extra)] += 1
        for extra in got - want:
            if not want - got:
                confusions[("(none)", extra)] += 1
        place_ok = reading.place == story["place"]
        if story["place"] is not None:
            place_named += 1
            place_right += place_ok
        elif reading.place is not None:
            place_invented += 1
        if story.get("perpetrator"):
            perpetrator_named += 1
            perpetrator_right += reading.perpetrator == story["perpetrator"]
        if want == got:
            exact += 1
        if want != got or not place_ok:
            wrong.append((story, reading))

    print(f"Understanding, {len(stories)} stories from {', '.join(p.name for p in args.corpus)}")
    print(f"  {'kind':<16} {'stories':>7} {'precision':>9} {'recall':>8}")
    for kind in KINDS:
        support = tp[kind] + fn[kind]
        if support or fp[kind]:
            print(f"  {kind:<16} {support:>7} {ratio(tp[kind], tp[kind] + fp[kind]):>9} {ratio(tp[kind], support):>8}")
    place_tp = collections.Counter()
    place_fp = collections.Counter()
    place_fn = collections.Counter()
    for story, reading in zip(stories, readings):
        if reading.place == story["place"] and reading.place:
            place_tp[reading.place] += 1
        else:
            if reading.place:
                place_fp[reading.place] += 1
            if story["place"]:
                place_fn[story["place"]] += 1
    print(f"  {'place':<16} {'stories':>7} {'precision':>9} {'recall':>8}")
    for place in PLACES:
        support = place_tp[place] + place_fn[place]
        if support or place_fp[place]:
            print(f"  {place:<16} {support:>7} {ratio(place_tp[place], place_tp[place] + place_fp[place]):>9} "
                  f"{ratio(place_tp[place], support):>8}")
    print(f"  every kind right, nothing wrong   {ratio(exact, len(stories))}  ({exact}/{len(stories)}; target >= 95%)")
    print(f"  right place, where one is named   {ratio(place_right, place_named)}  ({place_right}/{place_named}; target >= 95%)")
    print(f"  a place guessed where none named  {place_invented}")
    print(f"  right perpetrator, where named    {ratio(perpetrator_right, perpetrator_named)}  ({perpetrator_right}/{perpetrator_named})")
    print(f"  reading time  {1000 * elapsed / max(1, len(stories)):.2f} ms per story")
    worst = [(f"{a} read as {b}", n) for (a, b), n in confusions.most_common(3)]
    print("  worst confusions: " + ("; ".join(f"{text} ({n}x)" for text, n in worst) or "none"))
    for story, reading in wrong[:args.show]:
        print(f"\n  {story['id']}: {story['text']}")
        print(f"    want {story['kinds']} @ {story['place']}   got {list(reading.kinds)} @ {reading.place}")
        for line in reading.explain():
            print(f"      {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
